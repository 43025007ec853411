"""Dataset registry: tensors in memory plus the metadata grids validate against.

A registered dataset gives num_classes, class_names and input_shape without loading anything (so a
grid validates on a driver without the data), and `load(name, data_root, download)` returns a
`Dataset` of train/test tensors. Retain/forget splits are canonical: a pure function of the labels
and the forget set, with a hash of the indices logged next to every result.

Adding a dataset (MNIST, CIFAR, Tiny-ImageNet arrive this way): write a loader returning a Dataset
and register it with its metadata.
"""
import functools
import importlib
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from trainables import data_cache, store

# what each dataset is: trainables/datasets.py (no torch there, so grids validate without it)
from trainables.datasets import (DATASETS, DEFAULT_DATA_ROOT, DatasetInfo, class_index, get_info,  # noqa: F401
                                 register)


@dataclass
class Dataset:
    info: DatasetInfo
    train_x: torch.Tensor        # (N, C, H, W): uint8 pixels when info.mean is set, else float32 model inputs
    train_y: torch.Tensor        # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor

    def model_input(self, x):
        """x (any slice of train_x/test_x, on any device) as the float32 the model sees."""
        return model_input(self.info, x)


def model_input(info, x):
    """uint8 images -> float32 normalised with info.mean/std (on x's device); float inputs unchanged."""
    if x.dtype != torch.uint8:
        return x
    mean, std = _channel_stats(info.mean, info.std, x.device)
    return (x.float() / 255.0 - mean) / std


@functools.lru_cache(maxsize=16)
def _channel_stats(mean, std, device):
    """mean, std as (1, C, 1, 1) tensors, built once per device: model_input runs on every batch, and
    a new tensor on a GPU per batch is a host-to-device copy."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def random_crop_flip(x, generator, padding):
    """Per-sample random crop of x (N, C, H, W) after zero padding + horizontal flip with p = 0.5 (as
    torchvision's RandomCrop(H, padding) + RandomHorizontalFlip), batched on x's device (uint8 or
    float). Offsets and flips come from the CPU `generator`, so results do not depend on the device."""
    n, channels, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    rows = offsets[0][:, None] + torch.arange(height)                 # (N, H) rows of the padded image
    cols = offsets[1][:, None] + torch.arange(width)                  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)            # a flip reverses the column order
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows, cols = rows.to(x.device), cols.to(x.device)
    samples = torch.arange(n, device=x.device)[:, None, None, None]
    planes = torch.arange(channels, device=x.device)[None, :, None, None]
    return padded[samples, planes, rows[:, None, :, None], cols[:, None, None, :]]


def training_input(info, x, generator):
    """A training batch as the model sees it: the dataset's crop + flip (if it has one), then model_input.
    The `augment` of trainables.train.run_epochs for originals and Retrain models."""
    if info.crop_padding:
        x = random_crop_flip(x, generator, info.crop_padding)
    return model_input(info, x)


@dataclass
class Split:
    """Retain/forget indices of one split for one forget set."""
    retain: np.ndarray
    forget: np.ndarray
    hash: str


def load(name, data_root=None, download=False):
    """The dataset's train/test tensors. Cached per process (trials that reuse a Ray actor load it once):
    callers must not modify the returned tensors in place. data_root: a folder, or a bucket URI the
    dataset is staged in (`unlearn-grid stage-data`), fetched into this node's cache first."""
    get_info(name)
    return _load_cached(name, str(data_root or DEFAULT_DATA_ROOT), bool(download))


@functools.lru_cache(maxsize=2)
def _load_cached(name, data_root, download):
    info = get_info(name)
    loader = info.loader
    if isinstance(loader, str):        # "module:function" (trainables/datasets.py): imported on first load
        module, function = loader.split(":")
        loader = getattr(importlib.import_module(module), function)
    if info.folder is None:            # no files (digits, toy2d): nothing to fetch or download
        return loader(data_root, download)
    if store.is_uri(data_root):        # staged in a bucket: fetched once per node into its local cache
        return loader(str(data_cache.fetch_dataset(data_root, name)), False)
    if download:                       # trials of one node would race on torchvision's in-place download
        with data_cache.download_lock(data_root):
            return loader(data_root, True)
    return loader(data_root, False)


def forget_split(labels, forget_classes):
    """Canonical retain/forget indices (sorted) of one split, with a short hash of both."""
    labels = np.asarray(labels)
    is_forget = np.isin(labels, sorted(forget_classes))
    retain, forget = np.flatnonzero(~is_forget), np.flatnonzero(is_forget)
    digest = hashlib.sha1(retain.astype(np.int64).tobytes() + b"|" + forget.astype(np.int64).tobytes())
    return Split(retain, forget, digest.hexdigest()[:12])


@dataclass
class HoldoutSplit:
    """The test split cut in two, per class: `validation` (what searches tune on) and `holdout`
    (what a grid with evaluation.split = holdout reports on); disjoint, together the whole test set."""
    validation: np.ndarray
    holdout: np.ndarray
    hash: str


def holdout_split(labels, seed):
    """Half of each class's test samples (rounded down) to validation, the rest to holdout: a pure
    function of the labels and `seed` (the grid's evaluation.seed), indices sorted, hashed like forget_split."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    validation = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        validation.append(rng.permutation(members)[:len(members) // 2])
    validation = np.sort(np.concatenate(validation)) if validation else np.array([], dtype=np.int64)
    holdout = np.setdiff1d(np.arange(len(labels)), validation)
    digest = hashlib.sha1(validation.astype(np.int64).tobytes() + b"|" + holdout.astype(np.int64).tobytes())
    return HoldoutSplit(validation, holdout, digest.hexdigest()[:12])


def evaluation_indices(labels, evaluation):
    """Test indices a trial reports on: all of them for evaluation.split 'test' (the default),
    holdout_split(...).holdout for 'holdout'."""
    if evaluation.get("split", "test") == "test":
        return np.arange(len(labels))
    return holdout_split(labels, evaluation["seed"]).holdout


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


DIGITS = get_info("digits")


# Figure 2 of the paper (the TRW toy example): three 2-D Gaussian classes (diagonal covariances).
# Class "a" (0, the natural forget class) sits between "b" and "c", much closer to "b":
#   a: mean ( 0, 0), var (0.3, 0.3)   a small round blob (the forget class)
#   b: mean ( 2, 0), var (0.1, 1.0)   a thin vertical band just right of a: centroid distance 2.0
#   c: mean (-6, 4), var (0.1, 3.0)   a long thin band far up-left:          centroid distance 7.2
# The classes are separable (an MLP reaches ~99% test accuracy). A Retrain model (b and c only) puts
# its b/c boundary in the wide gap between them, left of a, so it sends most of a's samples to b (the
# nearer class). The original model must cut a from b with a steep boundary (they are close), so in
# a's region b's logit has already fallen far below a's, while the distant, gentle a/c boundary leaves
# c's logit higher: the original's softmax prefers c to b on most a-samples, and plain rescaling (TRW
# with λ = 0) sends a mostly to c. Tilting toward the nearest centroid (similarity centroid_distance)
# recovers Retrain's choice. Measured numbers: tests/test_toy.py.
TOY2D_MEANS = ((0.0, 0.0), (2.0, 0.0), (-6.0, 4.0))
TOY2D_COVS = (((0.3, 0.0), (0.0, 0.3)), ((0.1, 0.0), (0.0, 1.0)), ((0.1, 0.0), (0.0, 3.0)))
TOY2D_TRAIN_PER_CLASS, TOY2D_TEST_PER_CLASS, TOY2D_SEED = 300, 150, 0


def _toy2d_split(rng, per_class):
    xs, ys = [], []
    for label, (mean, cov) in enumerate(zip(TOY2D_MEANS, TOY2D_COVS)):
        xs.append(rng.multivariate_normal(mean, cov, size=per_class))
        ys.append(np.full(per_class, label, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(y))                      # classes interleaved, like the other datasets
    return torch.from_numpy(x[order].astype(np.float32)[:, :, None, None]), torch.from_numpy(y[order])


def _load_toy2d(data_root, download):
    """Figure 2's toy data (geometry above): 300 train + 150 test samples per class, fixed seed.

    Tensors are (N, 2, 1, 1) like every other dataset's (N, C, H, W); x[:, :, 0, 0] are the coordinates.
    """
    rng = np.random.default_rng(TOY2D_SEED)              # seed fixed forever (bump `version` if it changes)
    train_x, train_y = _toy2d_split(rng, TOY2D_TRAIN_PER_CLASS)
    test_x, test_y = _toy2d_split(rng, TOY2D_TEST_PER_CLASS)
    return Dataset(TOY2D, train_x, train_y, test_x, test_y)


TOY2D = get_info("toy2d")

