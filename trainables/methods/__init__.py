"""Unlearning-method registry: one file per method, one signature.

    @register("name", epochs=10, lr=1e-3, ...)      # the defaults, which also fix each param's type
    def run(task: UnlearnTask, params: dict) -> nn.Module

`run` gets the frozen original in `task.original` and must return a *new* model with the same
output size, leaving the original untouched. `params` are the defaults overridden by the grid file.
Grid validation checks every param name, type and range through `check_params` before any trial.
Every module in this package is imported (so registered) automatically; DISPLAY_ORDER only orders
the tables' rows.

`version=N` (default 1): bump it when a change alters what a method computes for the same params;
from 2 on it is part of the unlearn and search trial keys (`method_version`), so results stored by
the older code are not reused as if the new code had produced them.

Param types come from the defaults: bool, int (>= 0; >= 1 for POSITIVE names), float (>= 0; > 0
for POSITIVE names), str (optionally restricted by `choices`). A None default is an optional
whole number >= 1 unless `types={name: float}` makes it an optional number > 0. `bounds={name:
(low, high)}` narrows a number's range further (e.g. a fraction in [0, 1]).
"""
import copy
import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from trainables.train import Speed, run_epochs, sgd


@dataclass
class UnlearnTask:
    original: nn.Module
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    forget_classes: list
    num_classes: int
    seed: int                  # the unlearning seed (spec unlearn_seed)
    device: torch.device = torch.device("cpu")
    dataset: str = ""          # registered dataset name, for per-dataset defaults (e.g. SVD's alphas)
    # per-epoch sink: log_epoch(epoch, metrics, model); model (the one being unlearned, mid-training) lets
    # a search evaluate it every epoch for early stopping
    log_epoch: Callable = field(default=lambda epoch, metrics, model=None: None)
    speed: Speed = Speed()     # how every method's training runs on the device (trainables.train.Speed; never compiles)
    original_seed: int = 0     # the seed of the original being unlearned (spec seed)
    # what a method chose at run time, logged as MLflow params of its run (e.g. trw_2r's layers_chosen)
    log_params: Callable = field(default=lambda params: None)

    def fresh_copy(self):
        """A trainable deep copy of the original, on the task's device."""
        model = copy.deepcopy(self.original).to(self.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def generator(self):
        return torch.Generator().manual_seed(self.seed)


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable
    defaults: dict
    choices: dict          # param -> allowed string values
    types: dict            # param -> float for optional numbers whose default is None
    bounds: dict           # param -> (low, high), inclusive, either None; on top of the type's range
    version: int = 1       # see the module docstring


METHODS = {}
# param names whose value must be > 0 (every other number must be >= 0)
POSITIVE = {"lr", "batch_size", "temperature"}
# table rows: the paper's order (Table 2), then anything else alphabetically
DISPLAY_ORDER = ["ft", "rl", "ga", "l1", "bu_shrink", "bu_expand", "salun", "svd", "scrub", "scar", "l2ul",
                 "rescale", "trw", "trw_2r"]


def register(name, choices=None, types=None, bounds=None, version=1, **defaults):
    def wrap(run):
        METHODS[name] = Method(name, run, dict(defaults), dict(choices or {}), dict(types or {}), dict(bounds or {}),
                               version)
        return run
    return wrap


def version_fields(name):
    """{"method_version": N} for a trial spec when the method's version is 2 or more, else {} (version 1
    leaves the keys of trials stored before versions existed as they were)."""
    method = METHODS.get(name)   # "original" (the Original row) is not a method
    return {"method_version": method.version} if method is not None and method.version > 1 else {}


def display_order():
    return [m for m in DISPLAY_ORDER if m in METHODS] + sorted(m for m in METHODS if m not in DISPLAY_ORDER)


def _check_value(key, value, default, choices, types):
    """Message for one invalid param value, or None. The default's type is the param's type."""
    # whole numbers up to 2^31 - 1 (beyond: a typo that would run forever); numbers finite (.inf, .nan
    # and 1e400 parse as floats and would train to NaN)
    is_int = isinstance(value, int) and not isinstance(value, bool) and value <= 2**31 - 1
    is_number = is_int or (isinstance(value, float) and math.isfinite(value))
    minimum = 1 if key in POSITIVE else 0
    if key in choices:
        return None if value in choices[key] else f"must be one of {list(choices[key])}, got {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if default is None and types.get(key) is float:   # optional number, null = a documented fallback
        return None if value is None or (is_number and value > 0) else f"must be a finite number > 0 or null, got {value!r}"
    if default is None:  # optional whole number, e.g. a rank where null means "all"
        return None if value is None or (is_int and value >= 1) else f"must be a whole number in 1..{2**31 - 1} or null, got {value!r}"
    if isinstance(default, int):
        return None if is_int and value >= minimum else f"must be a whole number in {minimum}..{2**31 - 1}, got {value!r}"
    if isinstance(default, float):
        if key in POSITIVE:
            return None if is_number and value > 0 else f"must be a finite number > 0, got {value!r}"
        return None if is_number and value >= 0 else f"must be a finite number >= 0, got {value!r}"
    return None if isinstance(value, type(default)) else f"must be a {type(default).__name__}, got {value!r}"


def check_params(name, params):
    """Errors (list of (param, message)) for a method's params; empty when they are valid."""
    method = METHODS[name]
    errors = []
    for key, value in params.items():
        if key not in method.defaults:
            errors.append((key, f"unknown parameter for {name}; allowed: {sorted(method.defaults)}"))
            continue
        message = _check_value(key, value, method.defaults[key], method.choices, method.types)
        low, high = method.bounds.get(key, (None, None))
        if message is None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if (low is not None and value < low) or (high is not None and value > high):
                message = f"must be in [{'-inf' if low is None else low}, {'inf' if high is None else high}], got {value!r}"
        if message:
            errors.append((key, message))
    return errors


def resolve_params(name, params):
    """Defaults overridden by `params`, numbers normalised to the defaults' types."""
    method = METHODS[name]
    merged = dict(method.defaults)
    for key, value in params.items():
        as_float = isinstance(merged.get(key), float) or (method.types.get(key) is float and value is not None)
        merged[key] = float(value) if as_float else value
    return merged


def finetune(task, model, x, targets, loss_fn, params, parameters=None, after_step=None):
    """The common inner loop: SGD (momentum, weight decay from params) on (x, targets) for params['epochs']."""
    optimizer = sgd(model, params["lr"], params.get("momentum", 0.9), params.get("weight_decay", 5e-4),
                    parameters=parameters)
    run_epochs(model, x, targets, loss_fn, optimizer, epochs=params["epochs"], batch_size=params["batch_size"],
               generator=task.generator(), device=task.device, after_step=after_step, on_epoch=lambda epoch, metrics: task.log_epoch(epoch, metrics, model),
               speed=task.speed)
    return model


def unlearn(name, task, params):
    """Run method `name` on `task`; returns the unlearned model (the original is left as it was)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    torch.manual_seed(task.seed)
    return METHODS[name].run(task, resolve_params(name, params))


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
