"""conftest.py's own_mlflow_store: each test has its own working directory and default MLflow store, and a
tracking URI one test sets does not reach the next (no MLflow store is opened: < 1 s)."""
import os
from pathlib import Path

import mlflow

from grid import tracking


def test_the_working_directory_and_the_default_stores_are_the_tests_own(tmp_path):
    # the CLI's default store is ./unlearn-grid/mlflow.db: from the repository's root it would be the
    # developer's own store
    assert Path.cwd().resolve() == tmp_path.resolve()
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'unlearn-grid' / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'default-mlflow.db'}"


def test_a_test_sets_mlflow_s_global_tracking_uri(tmp_path):
    # as grid/cli.py and tracking.ensure_experiment do; the next test checks that it was cleared
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mine.db'}")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mine.db'}"


def test_the_next_test_does_not_inherit_it(tmp_path):
    # run after the test above (pytest's default order), fails if own_mlflow_store stops clearing
    # MLflow's global tracking URI or restoring the environment variable mlflow.set_tracking_uri exports
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'default-mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'default-mlflow.db'}"
