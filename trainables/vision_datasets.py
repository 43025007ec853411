"""File-backed image datasets: MNIST, CIFAR-10, CIFAR-100 and Tiny-ImageNet.

Each dataset registers its metadata (classes, input shape, normalisation) at import, with no files
needed, so grids validate on a driver without the data. Loading reads the standard on-disk layout
under `data_root` (through torchvision's own dataset classes where torchvision has one) and returns
uint8 images (N, C, H, W) plus int64 labels (N,); `data.model_input` normalises them with mean/std.

When the files are missing and download is off, loaders raise FileNotFoundError naming the directory
and the files expected there, and how to get them (`data: {download: true}` or `data: {root: PATH}`).
"""
import concurrent.futures
import os

import numpy as np
import torch

from trainables.data import Dataset
# the facts of these datasets (classes, shapes, normalisation): trainables/datasets.py
from trainables.datasets import TINY_WNIDS, get_info

# ---------------------------------------------------------------- helpers


def _missing_files(dataset, root, subdir, expected, detail=None):
    """The FileNotFoundError raised when a dataset's files are not where the grid says they are."""
    message = (
        f"{dataset}: no usable dataset files in {os.path.join(root, subdir)}\n"
        f"  expected there: {expected}\n"
        f"  to get them: set `data: {{download: true}}` in the grid (the machine running the trials "
        f"needs network access), or copy the files to that directory, or set `data: {{root: PATH}}` "
        f"with the files in PATH/{subdir}")
    if detail:
        message += f"\n  ({detail})"
    return FileNotFoundError(message)


def _open_torchvision(cls, name, root, download, subdir, expected):
    """Train and test datasets of torchvision class `cls`; its "not found" RuntimeError becomes ours."""
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as err:
        if download:    # torchvision tried to download and failed: its own message says why
            raise
        raise _missing_files(name, root, subdir, expected, f"torchvision: {err}") from err


def _labels(targets):
    return torch.as_tensor(targets, dtype=torch.int64).contiguous()


def _check_class_names(name, found, expected):
    if tuple(found) != tuple(expected):
        raise ValueError(f"{name}: the class names in the dataset files {list(found)[:12]} ... differ from "
                         f"the names this project uses {list(expected)[:12]} ...: not the standard files?")


# ---------------------------------------------------------------- MNIST

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _load_mnist(data_root, download):
    """MNIST via torchvision.datasets.MNIST: 60k train / 10k test digits, (N, 1, 28, 28) uint8.

    Files: `<root>/MNIST/raw/` with the four uncompressed idx files (torchvision's layout).
    """
    from torchvision.datasets import MNIST
    root = os.path.abspath(data_root)
    train, test = _open_torchvision(
        MNIST, "mnist", root, download, os.path.join("MNIST", "raw"),
        f"the uncompressed idx files {', '.join(MNIST_FILES)}")
    return Dataset(MNIST_INFO,
                   train.data.unsqueeze(1).contiguous(), _labels(train.targets),   # (N, 28, 28) -> (N, 1, 28, 28)
                   test.data.unsqueeze(1).contiguous(), _labels(test.targets))


MNIST_INFO = get_info("mnist")


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

def _load_cifar(cls, info, data_root, download):
    """Shared body of the CIFAR loaders: torchvision's (N, 32, 32, 3) numpy -> (N, 3, 32, 32) uint8."""
    root = os.path.abspath(data_root)
    files = [name for name, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    train, test = _open_torchvision(
        cls, info.name, root, download, cls.base_folder,
        f"the python-pickle batches {', '.join(files)} (as extracted from {cls.filename}, md5-checked)")
    _check_class_names(info.name, train.classes, info.class_names)

    def images(split):
        return torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()   # NHWC -> NCHW
    return Dataset(info, images(train), _labels(train.targets), images(test), _labels(test.targets))


def _load_cifar10(data_root, download):
    """CIFAR-10 via torchvision.datasets.CIFAR10: 50k train / 10k test, (N, 3, 32, 32) uint8.

    Files: `<root>/cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta).
    """
    from torchvision.datasets import CIFAR10
    return _load_cifar(CIFAR10, CIFAR10_INFO, data_root, download)


def _load_cifar100(data_root, download):
    """CIFAR-100 via torchvision.datasets.CIFAR100, fine labels: 50k train / 10k test, (N, 3, 32, 32) uint8.

    Files: `<root>/cifar-100-python/` (train, test, meta).
    """
    from torchvision.datasets import CIFAR100
    return _load_cifar(CIFAR100, CIFAR100_INFO, data_root, download)


CIFAR10_INFO = get_info("cifar10")

CIFAR100_INFO = get_info("cifar100")


# ---------------------------------------------------------------- Tiny-ImageNet

TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_CACHE = "unlearn-grid-cache-v1.pt"   # decoded tensors, written next to the images after the first load
TINY_LAYOUT = ("wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
               "val/val_annotations.txt (the tiny-imagenet-200.zip layout)")




def tinyimagenet_class_names(words_txt, wnids):
    """Class names from a words.txt as this project defines them (how tinyimagenet_classes.tsv was made).

    A class's name is the first comma-separated entry of its words.txt line ("n01443537<TAB>goldfish,
    Carassius auratus" -> "goldfish"); when two classes would share a name, both become "name (wnid)".
    """
    first_entry = {}
    with open(words_txt, encoding="utf-8") as f:
        for line in f:
            wnid, _, words = line.rstrip("\n").partition("\t")
            first_entry[wnid] = words.split(",")[0].strip()
    names = [first_entry[wnid] for wnid in wnids]
    return tuple(f"{name} ({wnid})" if names.count(name) > 1 else name for wnid, name in zip(wnids, names))


def _tiny_files_present(folder):
    return all(os.path.exists(os.path.join(folder, part)) for part in
               ("wnids.txt", "train", os.path.join("val", "images"), os.path.join("val", "val_annotations.txt")))


def _read_rgb(path):
    """One image as (3, 64, 64) uint8; convert("RGB") because a few Tiny-ImageNet JPEGs are grayscale."""
    from PIL import Image
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB"))     # a writable copy (torch.from_numpy wants one)
    if pixels.shape != (64, 64, 3):
        raise ValueError(f"tinyimagenet: {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected 64x64")
    return pixels.transpose(2, 0, 1)


def _decode(paths):
    """All images of `paths` as one (N, 3, 64, 64) uint8 tensor (decoded on a few threads: PIL frees the GIL)."""
    out = torch.empty((len(paths), 3, 64, 64), dtype=torch.uint8)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, pixels in enumerate(pool.map(_read_rgb, paths)):
            out[i] = torch.from_numpy(pixels)
    return out


def _decode_tinyimagenet(folder):
    """The four tensors, decoded from the JPEGs under `folder` (slow: ~110k images)."""
    from torchvision.datasets import ImageFolder
    with open(os.path.join(folder, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())
    if tuple(wnids) != TINY_WNIDS:
        raise ValueError(f"tinyimagenet: {folder}/wnids.txt lists {len(wnids)} classes that differ from the "
                         f"200 Tiny-ImageNet classes this project uses (trainables/tinyimagenet_classes.tsv)")
    # train: ImageFolder's classes are the sorted folder names (= the sorted wnids), its labels their positions
    train = ImageFolder(os.path.join(folder, "train"))
    if tuple(train.classes) != TINY_WNIDS:
        raise ValueError(f"tinyimagenet: the class folders in {folder}/train differ from the wnids in wnids.txt")
    train_x = _decode([path for path, _label in train.samples])
    train_y = _labels(train.targets)
    # val (our test split): val_annotations.txt lines are "filename<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"
    index = {wnid: i for i, wnid in enumerate(TINY_WNIDS)}
    paths, labels = [], []
    with open(os.path.join(folder, "val", "val_annotations.txt")) as f:
        for line in f:
            if line.strip():
                filename, wnid = line.split("\t")[:2]
                paths.append(os.path.join(folder, "val", "images", filename))
                labels.append(index[wnid])
    return train_x, train_y, _decode(paths), _labels(labels)


def _save_cache(path, tensors):
    """torch.save the tensors atomically (tmp file + os.replace); a folder we cannot write just skips it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(dict(zip(("train_x", "train_y", "test_x", "test_y"), tensors)), tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_tinyimagenet(data_root, download):
    """Tiny-ImageNet (200 classes, 64x64 RGB): 100k train / 10k val (our test split), (N, 3, 64, 64) uint8.

    Files: `<root>/tiny-imagenet-200/` as unzipped from tiny-imagenet-200.zip. The first load decodes the
    JPEGs (minutes) and saves `tiny-imagenet-200/unlearn-grid-cache-v1.pt`; later loads read that file.
    """
    root = os.path.abspath(data_root)
    folder = os.path.join(root, TINY_FOLDER)
    cache = os.path.join(folder, TINY_CACHE)
    if os.path.isfile(cache):
        saved = torch.load(cache, weights_only=True)
        return Dataset(TINYIMAGENET_INFO, saved["train_x"], saved["train_y"], saved["test_x"], saved["test_y"])
    if not _tiny_files_present(folder):
        if not download:
            raise _missing_files("tinyimagenet", root, TINY_FOLDER, TINY_LAYOUT)
        # no torchvision class for it: fetch the official zip (~240 MB), which unpacks to tiny-imagenet-200/
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(TINY_URL, download_root=root, remove_finished=True)
    tensors = _decode_tinyimagenet(folder)
    _save_cache(cache, tensors)
    return Dataset(TINYIMAGENET_INFO, *tensors)


TINYIMAGENET_INFO = get_info("tinyimagenet")
