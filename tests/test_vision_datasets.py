"""File-backed image datasets (trainables/vision_datasets.py), each loaded from tiny files written in its
real on-disk layout under a pytest tmp dir, through torchvision's real dataset classes."""
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import data, datasets, vision_datasets as vd

PAPER_TINY_NAMES = ("goldfish", "European fire salamander", "bullfrog", "tailed frog", "American alligator",
                    "boa constrictor", "trilobite", "scorpion", "black widow", "tarantula")


@pytest.fixture(autouse=True)
def fresh_load_cache():
    """data.load caches per (name, root): tests use new tmp roots, but start and end clean anyway."""
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()


def image_pattern(n, channels, size, seed):
    """Known uint8 pixels (n, channels, size, size), spanning 0..255."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


# ---------------------------------------------------------------- MNIST

def write_idx(path, array):
    """An uncompressed idx file: big-endian magic (0x08 = uint8, ndim), then each dim, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root, n_train=12, n_test=6):
    raw = root / "MNIST" / "raw"      # torchvision's MNIST.raw_folder; _check_exists wants these 4 files only
    raw.mkdir(parents=True)
    train_x, test_x = image_pattern(n_train, 1, 28, 0)[:, 0], image_pattern(n_test, 1, 28, 1)[:, 0]
    train_y, test_y = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    write_idx(raw / "train-images-idx3-ubyte", train_x)     # magic 2051
    write_idx(raw / "train-labels-idx1-ubyte", train_y)     # magic 2049
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return train_x, train_y, test_x, test_y


def test_mnist_loads_idx_files(tmp_path):
    train_x, train_y, test_x, test_y = write_mnist(tmp_path)
    ds = data.load("mnist", str(tmp_path))
    assert ds.info.input_shape == (1, 28, 28) and ds.info.class_names == tuple("0123456789")
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (12, 1, 28, 28) and ds.train_x.is_contiguous()
    assert ds.test_x.shape == (6, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), train_x) and np.array_equal(ds.test_x[:, 0].numpy(), test_x)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == train_y.tolist()
    assert ds.test_y.tolist() == test_y.tolist()


# ---------------------------------------------------------------- CIFAR

@pytest.fixture
def cifar_fixture_md5(monkeypatch):
    """torchvision md5-checks every CIFAR file (data batches and meta) against the official archives'
    checksums, which tiny fixture files cannot match. Keep its existence check, skip the md5 comparison
    (for tests only: the loader itself runs torchvision's check unchanged)."""
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_pickle(path, obj):
    # The official files are Python-2 pickles whose str keys torchvision reads back as str ("data",
    # "labels", ...) with encoding="latin1"; str keys written from Python 3 read back the same way.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(images):
    """(N, 3, 32, 32) -> CIFAR's (N, 3072) rows: the 1024 red, then green, then blue values, row-major."""
    return images.reshape(len(images), 3072)


def write_cifar10(root, class_names=datasets.CIFAR10_CLASSES, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x, y = image_pattern(per_batch, 3, 32, b), [(b + i) % 10 for i in range(per_batch)]
        write_pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                                                  "labels": y, "data": cifar_rows(x)})
        train_x.append(x)
        train_y += y
    test_x, test_y = image_pattern(6, 3, 32, 99), [9, 8, 7, 1, 0, 2]
    test_x[0, 0, 0, 0] = 255      # a full-intensity red pixel (checked against model_input below)
    write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y,
                                         "data": cifar_rows(test_x)})
    write_pickle(folder / "batches.meta", {"label_names": list(class_names), "num_cases_per_batch": per_batch})
    return np.concatenate(train_x), train_y, test_x, test_y


def write_cifar100(root, fine_names=datasets.CIFAR100_CLASSES):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {}
    for name, n, seed in (("train", 8, 5), ("test", 4, 6)):
        x, fine = image_pattern(n, 3, 32, seed), [(seed * 17 + 13 * i) % 100 for i in range(n)]
        write_pickle(folder / name, {"filenames": [f"img{i}.png" for i in range(n)], "batch_label": name,
                                     "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                     "data": cifar_rows(x)})
        splits[name] = (x, fine)
    write_pickle(folder / "meta", {"fine_label_names": list(fine_names),
                                   "coarse_label_names": [f"super{i}" for i in range(20)]})
    return splits


def test_cifar10_loads_python_batches(tmp_path, cifar_fixture_md5):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    ds = data.load("cifar10", str(tmp_path))
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.is_contiguous()
    assert ds.test_x.shape == (6, 3, 32, 32) and ds.test_x.is_contiguous()
    assert np.array_equal(ds.train_x.numpy(), train_x) and np.array_equal(ds.test_x.numpy(), test_x)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == train_y and ds.test_y.tolist() == test_y
    assert ds.info.class_names == datasets.CIFAR10_CLASSES and ds.info.crop_padding == 4


def test_cifar100_loads_fine_labels(tmp_path, cifar_fixture_md5):
    splits = write_cifar100(tmp_path)
    ds = data.load("cifar100", str(tmp_path))
    assert ds.train_x.shape == (8, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert np.array_equal(ds.train_x.numpy(), splits["train"][0])
    assert np.array_equal(ds.test_x.numpy(), splits["test"][0])
    assert ds.train_y.tolist() == splits["train"][1] and ds.test_y.tolist() == splits["test"][1]
    assert ds.info.num_classes == 100 and len(set(ds.info.class_names)) == 100


def test_cifar_class_names_must_match(tmp_path, cifar_fixture_md5):
    write_cifar100(tmp_path, fine_names=("not_an_apple",) + datasets.CIFAR100_CLASSES[1:])
    with pytest.raises(ValueError, match="cifar100: the class names"):
        data.load("cifar100", str(tmp_path))


def test_model_input_normalises_uint8(tmp_path, cifar_fixture_md5):
    write_cifar10(tmp_path)
    ds = data.load("cifar10", str(tmp_path))
    x = ds.model_input(ds.test_x[:2])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32)
    mean, std = ds.info.mean, ds.info.std
    assert float(x[0, 0, 0, 0]) == pytest.approx((1.0 - mean[0]) / std[0], rel=1e-6)
    raw = ds.test_x[1, 2, 5, 7].item()
    assert float(x[1, 2, 5, 7]) == pytest.approx((raw / 255.0 - mean[2]) / std[2], rel=1e-5)


# ---------------------------------------------------------------- Tiny-ImageNet

def class_colour(i):
    """A distinct solid colour per class index (solid: JPEG keeps it within a few levels)."""
    return ((37 * i) % 256, (91 * i + 60) % 256, (53 * i + 120) % 256)


VAL = [("val_0.JPEG", 0), ("val_1.JPEG", 199), ("val_2.JPEG", 57), ("val_3.JPEG", 3)]   # (file, class index)
GRAY_VAL, GRAY_LEVEL = "val_3.JPEG", 100


def write_tinyimagenet(root, wnids=datasets.TINY_WNIDS):
    """The tiny-imagenet-200.zip layout: 1 train JPEG per class (class 5's is grayscale) and 4 val JPEGs."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in reversed(wnids)))    # file order: not sorted
    words = ["n00001740\tentity\n"] + [f"{w}\t{name}, some synonym\n" for w, name in zip(wnids, datasets.TINY_CLASSES)]
    (folder / "words.txt").write_text("".join(words))
    for i, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        image = Image.new("L", (64, 64), GRAY_LEVEL) if i == 5 else Image.new("RGB", (64, 64), class_colour(i))
        image.save(images / f"{wnid}_0.JPEG", format="JPEG", quality=95)
    lines = []
    for filename, label in VAL:
        image = (Image.new("L", (64, 64), GRAY_LEVEL) if filename == GRAY_VAL
                 else Image.new("RGB", (64, 64), class_colour(label)))
        image.save(folder / "val" / "images" / filename, format="JPEG", quality=95)
        lines.append(f"{filename}\t{wnids[label]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


def test_tinyimagenet_loads_decodes_and_caches(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    ds = data.load("tinyimagenet", str(tmp_path))
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (200, 3, 64, 64) and ds.train_x.is_contiguous()
    assert ds.test_x.shape == (len(VAL), 3, 64, 64)
    # ImageFolder order: sorted wnids, so train sample i is class i
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == list(range(200))
    assert ds.test_y.tolist() == [label for _f, label in VAL]
    # pixels: exactly what PIL decodes, and the solid colours survive (RGB order, NCHW layout)
    wnid = datasets.TINY_WNIDS[7]
    decoded = np.asarray(Image.open(folder / "train" / wnid / "images" / f"{wnid}_0.JPEG").convert("RGB"))
    assert np.array_equal(ds.train_x[7].numpy(), decoded.transpose(2, 0, 1))
    for i in (0, 7, 199):
        mean_colour = ds.train_x[i].float().mean(dim=(1, 2))
        assert torch.allclose(mean_colour, torch.tensor(class_colour(i), dtype=torch.float32), atol=3), i
    assert torch.allclose(ds.test_x[1].float().mean(dim=(1, 2)), torch.tensor(class_colour(199), dtype=torch.float32),
                          atol=3)
    # grayscale JPEGs come out as 3 equal channels
    for gray in (ds.train_x[5], ds.test_x[3]):
        assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
        assert abs(gray.float().mean().item() - GRAY_LEVEL) < 2

    cache = folder / "unlearn-grid-cache-v1.pt"
    assert cache.is_file() and not [p for p in os.listdir(folder) if ".tmp" in p]
    # the second load reads the cache: it still works with the JPEGs gone
    for path in (folder / "train").rglob("*.JPEG"):
        path.unlink()
    data._load_cached.cache_clear()
    again = data.load("tinyimagenet", str(tmp_path))
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, name), getattr(ds, name)), name


def test_tinyimagenet_skips_cache_when_unwritable(tmp_path, monkeypatch):
    folder = write_tinyimagenet(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only data folder")
    monkeypatch.setattr(torch, "save", refuse)     # as if the folder were read-only (tests run as root)
    ds = vd._load_tinyimagenet(str(tmp_path), False)
    assert ds.train_x.shape == (200, 3, 64, 64)
    assert not (folder / "unlearn-grid-cache-v1.pt").exists()
    assert not [p for p in os.listdir(folder) if ".tmp" in p]


def test_tinyimagenet_rejects_other_wnids(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    wnids = list(datasets.TINY_WNIDS[:-1]) + ["n99999999"]
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    with pytest.raises(ValueError, match="wnids.txt"):
        vd._load_tinyimagenet(str(tmp_path), False)


def test_tinyimagenet_embedded_classes_match_words_rule(tmp_path):
    assert len(datasets.TINY_WNIDS) == 200 == len(set(datasets.TINY_WNIDS)) and list(datasets.TINY_WNIDS) == sorted(datasets.TINY_WNIDS)
    assert len(set(datasets.TINY_CLASSES)) == 200
    assert datasets.TINY_WNIDS[:3] == ("n01443537", "n01629819", "n01641577")
    folder = write_tinyimagenet(tmp_path)
    assert vd.tinyimagenet_class_names(folder / "words.txt", datasets.TINY_WNIDS) == datasets.TINY_CLASSES
    # shared first entries are told apart by wnid
    words = tmp_path / "words.txt"
    words.write_text("n1\tcrane, bird\nn2\tcrane, machine\nn3\tgoldfish, Carassius auratus\n")
    assert vd.tinyimagenet_class_names(words, ["n1", "n2", "n3"]) == ("crane (n1)", "crane (n2)", "goldfish")


# ---------------------------------------------------------------- missing files, class names

@pytest.mark.parametrize("name, subdir", [("mnist", os.path.join("MNIST", "raw")),
                                          ("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python"),
                                          ("tinyimagenet", "tiny-imagenet-200")])
def test_missing_files_say_where_and_how(tmp_path, monkeypatch, name, subdir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        data.load(name, "relative/root", download=False)
    message = str(err.value)
    assert os.path.join(str(tmp_path), "relative", "root", subdir) in message      # absolute path
    assert name in message and "download: true" in message and "root: PATH" in message


def test_class_names_usable_in_grids():
    assert data.class_index(data.get_info("cifar10"), "automobile") == 1
    assert data.class_index(data.get_info("cifar100"), "apple") == 0
    assert data.class_index(data.get_info("mnist"), "7") == 7
    tiny = data.get_info("tinyimagenet")
    assert data.class_index(tiny, "goldfish") == 0
    assert [data.class_index(tiny, n) for n in PAPER_TINY_NAMES] == list(range(10))    # the first 10 wnids
    for name, shape, classes in (("mnist", (1, 28, 28), 10), ("cifar10", (3, 32, 32), 10),
                                 ("cifar100", (3, 32, 32), 100), ("tinyimagenet", (3, 64, 64), 200)):
        info = data.get_info(name)
        assert info.input_shape == shape and info.num_classes == classes == len(info.class_names)
        assert len(info.mean) == len(info.std) == shape[0] and info.version == "1"
