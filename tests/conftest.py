"""Shared fixtures.

`tiny_problem` (session scope, ~3-5 s on 2 cores): digits, a small_cnn original trained for 8 epochs with
seed 0, forget class 8, and a helper building `UnlearnTask`s the way trainables/trial.py does.
It is self-contained: other fixtures below it must not be needed by it.

`own_mlflow_store` (autouse): every test runs in its own tmp_path with its own default MLflow store, so no
test reads or writes the repository's ./unlearn-grid store, nor another test's runs.

`gates` (tests/gates.py, tests/plugins/gates.py): hold trials at a known point (an epoch, a method) in any
process until the test lets them go: the fault tests kill things while a trial is known to wait there.

`--random-order-seed=N` shuffles the modules and the tests within each module (finds order dependencies);
`.ci/run` passes a fresh seed and pytest prints it in its header.
"""
import contextlib
import random
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from trainables import data, methods, models
from trainables.recipe import Recipe
from trainables.train import predict_logits, seed_everything, train_classifier

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
    """One local Ray instance for the whole test session (ray.init costs ~5 s). Its workers import nothing
    of the tests': what a test needs in them comes through plugins (the `gates` fixture,
    tests/plugins/), which the driver hands to every trial's worker."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
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


def gpu_paper_grids():
    """The bundled paper grids meant for GPUs (paper-mnist, paper-cifar10, ...; not paper-mnist-cpu, whose
    trials take no GPU): the ones sized for cluster.yaml's GPU nodes."""
    from grid.plan import config
    return [name for name in config.bundled_grids()
            if name.startswith("paper-") and config.load(name).grid["resources"].get("gpu", 0) > 0]


TINY = {
    "name": "tiny",
    "datasets": "digits",
    "archs": "small_cnn",
    "forget_classes": [8],
    "seeds": [0, 1],
    "train": {"epochs": 6, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 2, "lr": 0.01, "lam": [0, 10]}, "ft": {"epochs": 1}},
    "ulira": {"shadow_models": 2},   # the U-LiRA stage on the models above: no extra training
    "checkpoint_minutes": 0,     # checkpoint every epoch, so the checkpoint path runs too
}


@pytest.fixture(scope="session")
def tiny_grid(run_grid, tmp_path_factory):
    """TINY run once per session (test_integration.py checks it): (folder, grid file, tracking URI, storage).
    Grids that train the same originals/Retrain models (digits/small_cnn, seeds 0 and 1, TINY's train
    recipe) run in this folder and reuse them, as grids on one machine do (test_evaluation_integration.py)."""
    folder = tmp_path_factory.mktemp("tiny")
    return (folder, *run_grid(folder, TINY))


# The paper's evaluation on digits, reported on the holdout half of the test split: U-LiRA, a λ sweep, a
# multi-class forget set. Run in TINY's store: its originals and forget set {8}'s Retrain models are
# TINY's, only evaluated again (a model's key has no evaluation, trainables/keys.py); its runs and its
# unlearn trials are its own (the evaluation is part of their trial keys).
EVALUATION = {
    "name": "evaluation",
    "datasets": "digits",
    "archs": "small_cnn",
    "forget_classes": [8, [8, 3]],
    "seeds": [0, 1],
    "train": {"epochs": 6, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 2, "lr": 0.01, "lam": [0, 10]}, "rl": {"epochs": 2}},
    "ulira": {"shadow_models": 2},
    "evaluation": {"split": "holdout"},
}


@pytest.fixture(scope="session")
def evaluation_grid(run_grid, tiny_grid):
    """EVALUATION run once per session in tiny_grid's folder (test_evaluation_integration.py reads its tables and
    figures, test_wiring.py recomputes its metrics): (folder, grid file, tracking URI, storage)."""
    folder = tiny_grid[0]
    return (folder, *run_grid(folder, EVALUATION))


@pytest.fixture
def gates(tmp_path, monkeypatch):
    """gates(NAME={...}, ...) -> tests/gates.py Gates in tmp_path/gates: the gates plugin's environment is set
    in this process too (config.load imports the plugin here, and `unlearn-grid run` in this process passes
    it on to the trials' workers). Afterwards every gate is released (a worker of the session's Ray still
    waiting goes on) and the method registry and plugin hooks are as before."""
    from gates import Gates
    from trainables import methods, plugins
    registry, loaded, hooks = dict(methods.METHODS), dict(plugins._loaded), list(plugins._epoch_hooks)
    made = []

    def make(**settings):
        made.append(Gates(tmp_path / "gates", **settings))
        for name, value in made[-1].env.items():
            monkeypatch.setenv(name, value)
        return made[-1]
    yield make
    for made_gates in made:
        made_gates.release()
    methods.METHODS.clear()
    methods.METHODS.update(registry)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    plugins._epoch_hooks[:] = hooks


@pytest.fixture(autouse=True)
def own_mlflow_store(tmp_path):
    """The working directory is the test's tmp_path: the CLI's default store ./unlearn-grid/mlflow.db
    (grid/tracking/mlflow_runs.py default_tracking_uri) and data root are the test's own, never the repository's.
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
    """--random-order-seed: modules in a shuffled order, and within each module its tests shuffled in groups
    that share the params of module- or session-scoped fixtures (test_methods' `outcome`, one method each):
    shuffling across those groups would set such a fixture up again at every change of param."""
    seed = config.getoption("--random-order-seed")
    if seed is None:
        return
    shuffler = random.Random(seed)
    by_module = {}
    for item in items:
        groups = by_module.setdefault(item.path, {})
        groups.setdefault(_wide_params(item), []).append(item)
    modules = list(by_module.values())
    shuffler.shuffle(modules)
    ordered = []
    for groups in modules:
        groups = list(groups.values())
        shuffler.shuffle(groups)
        for group in groups:
            shuffler.shuffle(group)
            ordered += group
    items[:] = ordered


def _wide_params(item):
    """The params of the item's fixtures wider than a function (module, session, ...): tests that share
    them share one setup of those fixtures."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ()
    return tuple(sorted((name, index) for name, index in callspec.indices.items()
                        if callspec._arg2scope.get(name) is not None and callspec._arg2scope[name].value != "function"))


def pytest_report_header(config):
    seed = config.getoption("--random-order-seed")
    return None if seed is None else f"random order: --random-order-seed={seed}"
