"""conftest.py's own_mlflow_store: each test has its own working directory and default MLflow store, and a
tracking URI one test sets does not reach the next (no MLflow store is opened: < 1 s)."""
import os
from pathlib import Path

import mlflow

from conftest import own_store
from grid.tracking import location


def test_the_working_directory_and_the_default_stores_are_the_tests_own(tmp_path):
    # the CLI's default store is ./unlearn-grid/mlflow.db: from the repository's root it would be the
    # developer's own store
    assert Path.cwd().resolve() == tmp_path.resolve()
    assert location.default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'unlearn-grid' / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'default-mlflow.db'}"


def test_a_tracking_uri_a_test_sets_does_not_outlive_it(tmp_path):
    # a test sets MLflow's global URI as grid/cli.py and mlflow_runs.ensure_experiment do: fails if
    # own_mlflow_store stops clearing it, restoring the environment variable mlflow.set_tracking_uri
    # exports, or restoring the working directory (the next test would inherit them). Driven here, inside
    # one test, so that it checks the same thing in any test order.
    outer_uri = mlflow.get_tracking_uri()
    inner = tmp_path / "inner"
    inner.mkdir()
    with own_store(inner):
        assert Path.cwd().resolve() == inner.resolve()
        assert mlflow.get_tracking_uri() == f"sqlite:///{inner / 'default-mlflow.db'}"
        mlflow.set_tracking_uri(f"sqlite:///{inner / 'mine.db'}")
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{inner / 'mine.db'}"
    assert Path.cwd().resolve() == tmp_path.resolve()
    assert mlflow.get_tracking_uri() == outer_uri == f"sqlite:///{tmp_path / 'default-mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == outer_uri


def test_the_random_order_shuffles_but_keeps_a_module_scoped_params_tests_together():
    """--random-order-seed (conftest.pytest_collection_modifyitems): modules and tests are shuffled, but the
    tests sharing a param of a module-scoped fixture (test_methods' `outcome`) stay together, so that
    fixture is set up once per param, not again at every change of param."""
    from types import SimpleNamespace

    import conftest

    def item(module, name, param=None):
        callspec = None if param is None else SimpleNamespace(indices={"outcome": param},
                                                              _arg2scope={"outcome": SimpleNamespace(value="module")})
        return SimpleNamespace(path=Path(module), name=name, callspec=callspec)
    items = [item("a.py", f"{test}[{param}]", param) for param in range(5) for test in ("forgets", "keeps", "copies")]
    items += [item("a.py", f"plain{n}") for n in range(4)] + [item("b.py", f"other{n}") for n in range(4)]
    original = [i.name for i in items]
    shuffled = list(items)
    conftest.pytest_collection_modifyitems(SimpleNamespace(getoption=lambda name: 3), shuffled)
    assert sorted(i.name for i in shuffled) == sorted(original) and [i.name for i in shuffled] != original
    params = [i.callspec.indices["outcome"] for i in shuffled if i.callspec is not None]
    changes = sum(1 for before, after in zip(params, params[1:]) if before != after)
    assert changes == 4                        # 5 params, each once: one setup per param
    modules = [str(i.path) for i in shuffled]
    assert modules == sorted(modules) or modules == sorted(modules, reverse=True)   # a module's tests stay together
