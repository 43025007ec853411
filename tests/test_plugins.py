"""UNLEARN_GRID_PLUGINS (trainables/plugins.py): a user's own method from a .py file or a module, validated
and counted by `unlearn-grid validate`; a plugin that does not import is one line, exit 2, nothing
written; the UNLEARN_GRID_* variables a trial's worker gets are exactly the driver's. (Plugins in the
trials' workers, through Ray: the gates of tests/plugins/gates.py in the fault tests.)"""
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from grid import cli
from grid.execution import stages
from trainables import methods, plugins

# the plugin example of docs/methods.md ("Plugins"), as a user writes it
METHODS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "methods.md"
EXAMPLE = next(block for block in re.findall(r"```python\n(.*?)```", METHODS_PAGE.read_text(), re.S)
               if '@register("ft_big_batch"' in block)
GRID = {"name": "plugged", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8],
        "methods": {"ft_big_batch": {"epochs": 2}}}


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry and the plugins' state as before the test; no UNLEARN_GRID_* from outside."""
    for name in [name for name in os.environ if name.startswith(plugins.PREFIX)]:
        monkeypatch.delenv(name)
    registry, loaded, hooks = dict(methods.METHODS), dict(plugins._loaded), list(plugins._epoch_hooks)
    yield
    methods.METHODS.clear()
    methods.METHODS.update(registry)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    plugins._epoch_hooks[:] = hooks


def test_a_method_from_a_plugin_file_validates_and_unlearns(tmp_path, monkeypatch, capsys, clean_registry,
                                                             tiny_problem):
    (tmp_path / "my_methods.py").write_text(EXAMPLE)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    assert cli.main(["validate", str(tmp_path / "grid.yaml")]) == 2            # not registered without it
    assert "ft_big_batch" in capsys.readouterr().err
    monkeypatch.setenv(plugins.ENV, str(tmp_path / "my_methods.py"))
    assert cli.main(["validate", str(tmp_path / "grid.yaml")]) == 0
    assert "1 original, 1 retrain, 2 unlearn trials" in capsys.readouterr().out   # the Original row and ft_big_batch
    model = methods.unlearn("ft_big_batch", tiny_problem.task(), {"epochs": 1})
    assert model is not tiny_problem.original


def test_a_plugin_module_by_name_is_imported_once(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "more_methods.py").write_text(EXAMPLE.replace("ft_big_batch", "ft_bigger_batch"))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load("more_methods, more_methods")
    plugins.load("more_methods")
    assert "ft_bigger_batch" in methods.METHODS and list(plugins._loaded) == ["more_methods"]
    sys.modules.pop("more_methods", None)


@pytest.mark.parametrize("entry, says", [("no_such_module_anywhere", "ModuleNotFoundError"),
                                         ("/no/such/file.py", "FileNotFoundError")])
def test_a_plugin_that_does_not_import_is_one_line_and_exit_2(entry, says, tmp_path, monkeypatch, capsys,
                                                             clean_registry):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(plugins.ENV, entry)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**GRID, "methods": {"ft": {}}}))
    assert cli.main(["run", str(tmp_path / "grid.yaml"), "--storage", str(tmp_path / "storage")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: UNLEARN_GRID_PLUGINS: cannot import {entry!r} ({says}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]       # nothing written


def test_a_workers_unlearn_grid_variables_become_exactly_the_drivers(monkeypatch, clean_registry):
    """What the driver hands every trial (grid/execution/stages.py's worker_env) replaces what an earlier driver left
    in a reused worker process: no stale plugin setting survives."""
    monkeypatch.setenv("UNLEARN_GRID_SOMETHING", "the driver's")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")     # restored after the test
    driver = stages.worker_env("http://127.0.0.1:5000")
    assert driver["UNLEARN_GRID_SOMETHING"] == "the driver's" and driver["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    monkeypatch.setenv("UNLEARN_GRID_TEST_GATES", "/from/an/earlier/driver")   # what the worker still had
    monkeypatch.setenv("UNLEARN_GRID_SOMETHING", "stale")
    plugins.apply_worker_env(driver)
    assert "UNLEARN_GRID_TEST_GATES" not in os.environ
    assert plugins.worker_env() == {"UNLEARN_GRID_SOMETHING": "the driver's"}


def test_a_plugin_file_named_relative_to_the_driver_reaches_the_workers_by_absolute_path(tmp_path, monkeypatch,
                                                                                      clean_registry):
    """A worker runs each trial in a folder of its own: my_methods.py must not be looked for there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(plugins.ENV, "my_methods.py,some.module")
    assert plugins.worker_env()[plugins.ENV] == f"{tmp_path.resolve() / 'my_methods.py'},some.module"
