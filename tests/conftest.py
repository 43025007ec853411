"""Shared fixtures.

`tiny_problem` (session scope, ~3-5 s on 2 cores): digits, a small_cnn original trained for 8 epochs with
seed 0, forget class 8, and a helper building `UnlearnTask`s the way trainables/trial.py does.
It is self-contained: other fixtures below it must not be needed by it.
"""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from trainables import data, methods, models
from trainables.train import Recipe, predict_logits, seed_everything, train_classifier

TINY_FORGET_CLASS = 8
TINY_RECIPE = Recipe(epochs=8, lr=0.05, batch_size=64, lr_step=10)


@dataclass
class TinyProblem:
    dataset: data.Dataset
    original: torch.nn.Module        # frozen (eval mode, requires_grad False), as the unlearn stage hands it over
    split: data.Split                # forget_split of the train labels for [forget_class]
    forget_class: int
    num_classes: int
    original_test_logits: np.ndarray

    def task(self, seed=0):
        """A fresh UnlearnTask on this problem (retain/forget train tensors from the split)."""
        ds = self.dataset
        return methods.UnlearnTask(
            original=self.original,
            retain_x=ds.train_x[self.split.retain], retain_y=ds.train_y[self.split.retain],
            forget_x=ds.train_x[self.split.forget], forget_y=ds.train_y[self.split.forget],
            forget_classes=[self.forget_class], num_classes=self.num_classes, seed=seed,
            device=torch.device("cpu"))

    def logits_on_test(self, model):
        """Eval-mode logits of `model` on the test split (numpy)."""
        return predict_logits(model, self.dataset.test_x, torch.device("cpu")).numpy()


@pytest.fixture(scope="session")
def tiny_problem():
    torch.set_num_threads(2)
    dataset = data.load("digits")
    info = dataset.info
    seed_everything(0)
    original = models.build("small_cnn", info.num_classes, info.input_shape)
    train_classifier(original, dataset.train_x, dataset.train_y, TINY_RECIPE,
                     generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    original.eval()
    for p in original.parameters():
        p.requires_grad_(False)
    split = data.forget_split(dataset.train_y.numpy(), [TINY_FORGET_CLASS])
    logits = predict_logits(original, dataset.test_x, torch.device("cpu")).numpy()
    return TinyProblem(dataset, original, split, TINY_FORGET_CLASS, info.num_classes, logits)


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole test session (ray.init costs ~5 s). Its workers run
    trust_fixture_cifar_files, so grids over fixture CIFAR files load them."""
    import ray

    def trust_fixture_cifar_files():
        # torchvision md5-checks CIFAR files against the official archives, which tiny fixture files
        # cannot match: keep its file-exists check, skip the md5 (tests only; see test_vision_datasets.py).
        # Nested, so Ray ships it by value (workers cannot import conftest).
        import os

        import torchvision.datasets.cifar as tv_cifar
        tv_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": trust_fixture_cifar_files})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def run_grid(ray_instance):
    """run_grid(folder, grid) -> (grid file, tracking URI, storage): `unlearn-grid run` of `grid` (a dict,
    written to folder/<name>.yaml, or a bundled grid's name) into folder's sqlite store and storage.
    Grids run in one folder share the store, as grids on one machine do."""
    import yaml

    from grid import cli

    def run(folder, grid):
        grid_file = grid
        if isinstance(grid, dict):
            grid_file = str(folder / f"{grid['name']}.yaml")
            (folder / f"{grid['name']}.yaml").write_text(yaml.safe_dump(grid))
        tracking_uri, storage = f"sqlite:///{folder / 'mlflow.db'}", folder / "storage"
        assert cli.main(["run", grid_file, "--tracking-uri", tracking_uri, "--storage", str(storage)]) == 0
        return grid_file, tracking_uri, storage
    return run
