"""Shared fixtures.

`tiny_problem` (session scope, ~3-5 s on 2 cores): digits, a small_cnn original trained for 8 epochs with
seed 0, forget class 8, and a helper building `UnlearnTask`s the way trainables/trial.py does.
It is self-contained: other fixtures below it must not be needed by it.

`own_mlflow_store` (autouse): every test runs in its own tmp_path with its own default MLflow store, so no
test reads or writes the repository's ./unlearn-grid store, nor another test's runs.

`--random-order-seed=N` shuffles the modules and the tests within each module (finds order dependencies).
"""
import contextlib
import random
import sys
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
    setup_worker: grids over fixture CIFAR files load them, and the method fails_on_purpose is registered."""
    import ray

    def setup_worker():
        # Nested, so Ray ships it by value (workers cannot import conftest).
        # torchvision md5-checks CIFAR files against the official archives, which tiny fixture files
        # cannot match: keep its file-exists check, skip the md5 (tests only; see test_vision_datasets.py).
        import os

        import torchvision.datasets.cifar as tv_cifar
        tv_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
        # a method that always raises, for test_failure_paths.py (which registers the same in the test's
        # own process only while it runs, so the registry-wide tests never see it)
        from trainables import methods

        def fails_on_purpose(task, params):
            raise RuntimeError("this method fails on purpose")
        if "fails_on_purpose" not in methods.METHODS:
            methods.register("fails_on_purpose", epochs=1)(fails_on_purpose)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": setup_worker})
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


TINY = {
    "name": "tiny",
    "datasets": "digits",
    "archs": "small_cnn",
    "forget_classes": [8],
    "seeds": [0, 1],
    "train": {"epochs": 6, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 2, "lr": 0.01, "lam": [0, 10]}, "ft": {"epochs": 1}},
    "checkpoint_minutes": 0,     # checkpoint every epoch, so the checkpoint path runs too
}


@pytest.fixture(scope="session")
def tiny_grid(run_grid, tmp_path_factory):
    """TINY run once per session (test_integration.py checks it): (folder, grid file, tracking URI, storage).
    Grids that train the same originals/Retrain models (digits/small_cnn, seeds 0 and 1, TINY's train
    recipe) run in this folder and reuse them, as grids on one machine do (test_evaluation_integration.py)."""
    folder = tmp_path_factory.mktemp("tiny")
    return (folder, *run_grid(folder, TINY))


@pytest.fixture(autouse=True)
def own_mlflow_store(tmp_path):
    """The working directory is the test's tmp_path: the CLI's default store ./unlearn-grid/mlflow.db
    (grid/tracking.py default_tracking_uri) and data root are the test's own, never the repository's.
    MLFLOW_TRACKING_URI names a sqlite file there that nothing creates unless a test opens MLflow
    without a URI; it is not the `mlflow.db` tests name explicitly, so code that ignores the URI it
    was given finds an empty store and fails."""
    with own_store(tmp_path):
        yield


@contextlib.contextmanager
def own_store(folder):
    """own_mlflow_store's body (test_isolation.py drives it directly): cwd and default store in folder.
    On exit any run left active is ended, MLflow's global tracking URI (mlflow.set_tracking_uri, which
    also exports MLFLOW_TRACKING_URI) is cleared, and the cwd and environment are restored."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'default-mlflow.db'}")
        try:
            yield
        finally:
            mlflow = sys.modules.get("mlflow")     # not imported by this test or any before it: nothing to reset
            if mlflow is not None:
                while mlflow.active_run() is not None:
                    mlflow.end_run()
                mlflow.set_tracking_uri(None)      # then the monkeypatch restores the environment variable


def pytest_addoption(parser):
    parser.addoption("--random-order-seed", type=int, default=None,
                     help="shuffle the order of modules and of the tests within each module with this seed")


def pytest_collection_modifyitems(config, items):
    seed = config.getoption("--random-order-seed")
    if seed is None:
        return
    shuffler = random.Random(seed)
    by_module = {}
    for item in items:
        by_module.setdefault(item.path, []).append(item)
    modules = list(by_module.values())
    shuffler.shuffle(modules)
    for module_items in modules:
        shuffler.shuffle(module_items)
    items[:] = [item for module_items in modules for item in module_items]


def pytest_report_header(config):
    seed = config.getoption("--random-order-seed")
    return None if seed is None else f"random order: --random-order-seed={seed}"
