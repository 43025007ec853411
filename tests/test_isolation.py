"""conftest.py's own_mlflow_store: each test has its own working directory and default MLflow store, and a
tracking URI one test sets does not reach the next (no MLflow store is opened: < 1 s)."""
import os
from pathlib import Path

import mlflow

from conftest import own_store
from grid import tracking


def test_the_working_directory_and_the_default_stores_are_the_tests_own(tmp_path):
    # the CLI's default store is ./unlearn-grid/mlflow.db: from the repository's root it would be the
    # developer's own store
    assert Path.cwd().resolve() == tmp_path.resolve()
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'unlearn-grid' / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'default-mlflow.db'}"


def test_a_tracking_uri_a_test_sets_does_not_outlive_it(tmp_path):
    # a test sets MLflow's global URI as grid/cli.py and tracking.ensure_experiment do: fails if
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
