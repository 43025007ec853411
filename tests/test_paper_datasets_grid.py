"""The paper's datasets and architectures in a grid, end to end through Ray Tune + MLflow, on tiny
files in the datasets' real on-disk formats (MNIST idx, CIFAR pickled batches, the Tiny-ImageNet
folders): originals with crop + flip augmentation of uint8 images, Retrain models, TRW on normalised
inputs, and evaluation. One epoch each, ResNet-18 only (every pair's shapes: test_data_models.py). The
system tier (~2 min on 2 cores, four Tuners); the loaders themselves: test_vision_datasets.py."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from grid.plan import config
from grid.tracking import mlflow_runs
from test_vision_datasets import cifar_rows, image_pattern, write_idx, write_pickle, write_tinyimagenet
from trainables import datasets

FORGET = 1        # a class index every dataset has: "1", automobile, aquarium_fish, European fire salamander
COMMON = {"forget_classes": [FORGET], "seeds": [0], "train": {"epochs": 1, "lr": 0.01, "batch_size": 16},
          "methods": {"trw": {"epochs": 1, "lr": 0.001}}, "checkpoint_minutes": 5}


def balanced_labels(n, num_classes):
    return [i % num_classes for i in range(n)]


def write_data(root):
    """Per class: MNIST/CIFAR-10 3 train + 2 test images, CIFAR-100 1 + 1, Tiny-ImageNet 1 + 1 (+ 4 val)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 30, 0), ("t10k", 20, 1)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", image_pattern(n, 1, 28, seed)[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array(balanced_labels(n, 10)))
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for b in range(1, 6):
        labels = [(6 * (b - 1) + i) % 10 for i in range(6)]      # 30 images over 5 batches: 3 per class
        write_pickle(folder / f"data_batch_{b}", {"labels": labels, "data": cifar_rows(image_pattern(6, 3, 32, b))})
    write_pickle(folder / "test_batch", {"labels": balanced_labels(20, 10), "data": cifar_rows(image_pattern(20, 3, 32, 9))})
    write_pickle(folder / "batches.meta", {"label_names": list(datasets.CIFAR10_CLASSES)})
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name, seed in (("train", 5), ("test", 6)):
        fine = balanced_labels(100, 100)
        write_pickle(folder / name, {"fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                     "data": cifar_rows(image_pattern(100, 3, 32, seed))})
    write_pickle(folder / "meta", {"fine_label_names": list(datasets.CIFAR100_CLASSES),
                                   "coarse_label_names": [f"super{i}" for i in range(20)]})
    folder = write_tinyimagenet(root)
    # its 4 val images miss the forget class: one more per class (as in the real val split, 50 per class)
    lines = []
    for label, wnid in enumerate(datasets.TINY_WNIDS):
        Image.new("RGB", (64, 64), ((7 * label) % 256, 90, 30)).save(folder / "val" / "images" / f"extra_{label}.JPEG")
        lines.append(f"extra_{label}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    with open(folder / "val" / "val_annotations.txt", "a") as annotations:
        annotations.write("".join(lines))


@pytest.fixture(scope="module")
def paper_grids(run_grid, tmp_path_factory):
    """Two grids over the fixture files: {mnist, cifar10, cifar100} x {resnet18, vgg19}, and Tiny-ImageNet
    with the ImageNet-pretrained ResNet-18 (its 'ImageNet weights' a saved random init: offline)."""
    folder = tmp_path_factory.mktemp("paper")
    root = folder / "data"
    write_data(root)
    weights = folder / "resnet18-f37072fd.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    grids = {
        # one grid for every dataset: each grid's stage starts new Ray workers (~8 s a stage here). One
        # architecture: every dataset/arch pair's shapes and gradients are tested without Ray
        # (test_data_models.py), and VGG-19 on 2 CPU cores was most of this test's time
        "small-paper": {**COMMON, "name": "small-paper", "datasets": ["mnist", "cifar10", "cifar100"],
                        "archs": ["resnet18"], "data": {"root": str(root)}},
        "small-tiny": {**COMMON, "name": "small-tiny", "datasets": "tinyimagenet", "archs": "resnet18_imagenet",
                       "data": {"root": str(root), "weights": str(weights)}},
    }
    # the driver and the trials' workers accept the fixture CIFAR files (tests/plugins/fixture_files.py)
    import torchvision.datasets.cifar as tv_cifar

    from trainables import plugins
    check, loaded = tv_cifar.check_integrity, dict(plugins._loaded)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(plugins.ENV, str(Path(__file__).parent / "plugins" / "fixture_files.py"))
        try:
            for grid in grids.values():
                _, tracking_uri, _ = run_grid(folder, grid)
        finally:
            tv_cifar.check_integrity = check
            plugins._loaded.clear()
            plugins._loaded.update(loaded)
    return tracking_uri, grids


@pytest.mark.system
@pytest.mark.parametrize("experiment", ["small-paper", "small-tiny"])
def test_every_dataset_and_arch_trains_retrains_and_unlearns(paper_grids, experiment):
    tracking_uri, grids = paper_grids
    runs = mlflow_runs.experiment_runs(tracking_uri, experiment)
    grid = grids[experiment]
    datasets = grid["datasets"] if isinstance(grid["datasets"], list) else [grid["datasets"]]
    archs = grid["archs"] if isinstance(grid["archs"], list) else [grid["archs"]]
    for dataset in datasets:
        for arch in archs:
            here = runs[(runs["dataset"] == dataset) & (runs["arch"] == arch)]
            assert set(here["method"]) == {"retrain", "original", "trw"}, (dataset, arch)
            trw = here[here["method"] == "trw"].iloc[0]
            for metric in ("acc_r_test", "acc_f_test", "mia_svm", "mia_nn"):
                assert 0.0 <= float(trw[metric]) <= 100.0, (dataset, arch, metric)


def test_the_paper_grids_validate_with_class_names():
    for name in ("paper-mnist", "paper-cifar10", "paper-cifar100", "paper-tinyimagenet"):
        plan = config.load(name)
        assert plan.retrain and plan.unlearn, name
    cifar100 = config.load("paper-cifar100")
    assert {tuple(t["spec"]["forget_classes"]) for t in cifar100.retrain} == {(c,) for c in range(10)}
    assert len(cifar100.retrain) == 3 * 10 * len(cifar100.grid["archs"])     # 3 Retrain models per forget class
