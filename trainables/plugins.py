"""Plugins: your own unlearning methods (and epoch hooks) without editing this package.

    UNLEARN_GRID_PLUGINS=my_methods,/shared/more_methods.py unlearn-grid run my-grid.yaml

Each comma-separated entry is a module name (importable on every node) or the path of a .py file
(readable on every node). The driver imports them before it validates the grid, so a grid may name
their methods; every trial's worker imports them before it runs a trial. A plugin registers methods
with `trainables.methods.register` and may watch training with `on_epoch`.

Every environment variable whose name starts with UNLEARN_GRID_ (this one included) is passed from
the driver to every trial's worker: workers on a cluster's other nodes do not inherit the driver's
environment, and a plugin may be configured through such a variable.
"""
import importlib
import importlib.util
import os
from pathlib import Path

ENV = "UNLEARN_GRID_PLUGINS"
PREFIX = "UNLEARN_GRID_"

_loaded = {}        # entry -> module
_epoch_hooks = []   # hook(stage=..., key=..., epoch=..., run_id=...) after each finished epoch


class PluginError(ImportError):
    """A plugin named in UNLEARN_GRID_PLUGINS that cannot be imported."""


def entries(value=None):
    value = os.environ.get(ENV, "") if value is None else value
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def load(value=None):
    """Import every plugin named in `value` (default: $UNLEARN_GRID_PLUGINS) not imported yet."""
    for entry in entries(value):
        if entry in _loaded:
            continue
        try:
            if entry.endswith(".py"):
                path = Path(entry).resolve()
                spec = importlib.util.spec_from_file_location(f"unlearn_grid_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(entry)
        except Exception as error:
            raise PluginError(f"{ENV}: cannot import {entry!r} ({type(error).__name__}: {error}); "
                              f"each entry is a module name or the path of a .py file") from error
        _loaded[entry] = module


def worker_env():
    """The UNLEARN_GRID_* variables of this process: what every trial's worker gets (apply_worker_env).
    Plugin files are named by absolute path: a worker runs each trial in a folder of its own."""
    env = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
    if ENV in env:
        env[ENV] = ",".join(str(Path(entry).resolve()) if entry.endswith(".py") else entry for entry in entries(env[ENV]))
    return env


def apply_worker_env(env):
    """In a trial's worker: its UNLEARN_GRID_* variables become exactly the driver's `env` (a reused
    worker process keeps no variable of an earlier driver's), then the plugins they name are imported."""
    for name in [name for name in os.environ if name.startswith(PREFIX) and name not in env]:
        del os.environ[name]
    os.environ.update(env)
    load()


def on_epoch(hook):
    """Register hook(stage=, key=, epoch=, run_id=), called after every finished epoch of a trial's training
    (stage original/retrain) or unlearning (unlearn, search_trial), after its checkpoint; usable as a decorator."""
    _epoch_hooks.append(hook)
    return hook


def epoch_end(stage, key, epoch, run_id):
    for hook in list(_epoch_hooks):
        hook(stage=stage, key=key, epoch=epoch, run_id=run_id)
