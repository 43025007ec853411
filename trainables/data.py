"""Dataset registry: tensors in memory plus the metadata grids validate against.

A registered dataset gives num_classes, class_names and input_shape without loading anything (so a
grid validates on a driver without the data), and `load(name, data_root, download)` returns a
`Dataset` of train/test tensors. Retain/forget splits are canonical: a pure function of the labels
and the forget set, with a hash of the indices logged next to every result.

Adding a dataset (MNIST, CIFAR, Tiny-ImageNet arrive this way): write a loader returning a Dataset
and register it with its metadata.
"""
import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    class_names: tuple
    input_shape: tuple           # (channels, height, width)
    loader: Callable             # (data_root, download) -> Dataset
    version: str = "1"           # bump when the data or the split changes: it is part of trial keys


@dataclass
class Dataset:
    info: DatasetInfo
    train_x: torch.Tensor        # float32 (N, C, H, W), values as the model sees them
    train_y: torch.Tensor        # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass
class Split:
    """Retain/forget indices of one split for one forget set."""
    retain: np.ndarray
    forget: np.ndarray
    hash: str


DATASETS = {}


def register(info):
    DATASETS[info.name] = info
    return info


def get_info(name):
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name]


def load(name, data_root=None, download=False):
    info = get_info(name)
    return info.loader(data_root, download)


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


def forget_split(labels, forget_classes):
    """Canonical retain/forget indices (sorted) of one split, with a short hash of both."""
    labels = np.asarray(labels)
    is_forget = np.isin(labels, sorted(forget_classes))
    retain, forget = np.flatnonzero(~is_forget), np.flatnonzero(is_forget)
    digest = hashlib.sha1(retain.astype(np.int64).tobytes() + b"|" + forget.astype(np.int64).tobytes())
    return Split(retain, forget, digest.hexdigest()[:12])


def _load_digits(data_root, download):
    """scikit-learn's 8x8 digits (ships with scikit-learn): fixed stratified 80/20 split, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # raw pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    # random_state fixed forever: the split is part of every result (bump `version` if it changes)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0)
    return Dataset(DIGITS, torch.from_numpy(train_x), torch.from_numpy(train_y),
                   torch.from_numpy(test_x), torch.from_numpy(test_y))


DIGITS = register(DatasetInfo(
    name="digits", num_classes=10, class_names=tuple(str(d) for d in range(10)),
    input_shape=(1, 8, 8), loader=_load_digits))
