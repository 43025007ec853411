"""Unlearning-method registry: one file per method, one signature.

    @register("name", epochs=10, lr=1e-3, ...)      # the defaults, which also fix each param's type
    def run(task: UnlearnTask, params: dict) -> nn.Module

`run` gets the frozen original in `task.original` and must return a *new* model with the same
output size, leaving the original untouched. `params` are the defaults overridden by the grid file.
Grid validation checks every param name, type and range through `check_params` before any trial.
Every module in this package registers its methods; DISPLAY_ORDER only orders the tables' rows.

Reading the registry imports no torch: what the modules register is also written in specs.json,
which is used while the sources it was made from are unchanged (a hash of them is in the file), so
`unlearn-grid validate` answers without importing a method. A method's module is imported when it
runs (`get`). After editing a method, `python -m trainables.methods` rewrites specs.json (a fast-tier
test says so when it is stale; until then every method module is imported, which is slower, not wrong).

`version=N` (default 1): bump it when a change alters what a method computes for the same params;
from 2 on it is part of the unlearn and search trial keys (`method_version`), so results stored by
the older code are not reused as if the new code had produced them.

Param types come from the defaults: bool, int (>= 0; >= 1 for POSITIVE names), float (>= 0; > 0
for POSITIVE names), str (optionally restricted by `choices`). A None default is an optional
whole number >= 1 unless `types={name: float}` makes it an optional number > 0. `bounds={name:
(low, high)}` narrows a number's range further (e.g. a fraction in [0, 1]).
"""
import hashlib
import importlib
import json
import math
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable          # None until its module is imported (`get` imports it)
    defaults: dict
    choices: dict          # param -> allowed string values
    types: dict            # param -> float for optional numbers whose default is None
    bounds: dict           # param -> (low, high), inclusive, either None; on top of the type's range
    version: int = 1       # see the module docstring
    module: str = ""       # the module that registers it


METHODS = {}
# param names whose value must be > 0 (every other number must be >= 0)
POSITIVE = {"lr", "batch_size", "temperature"}
# table rows: the paper's order (Table 2), then anything else alphabetically
DISPLAY_ORDER = ["ft", "rl", "ga", "l1", "bu_shrink", "bu_expand", "salun", "svd", "scrub", "scar", "l2ul",
                 "rescale", "trw", "trw_2r"]


def register(name, choices=None, types=None, bounds=None, version=1, **defaults):
    def wrap(run):
        METHODS[name] = Method(name, run, dict(defaults), {k: tuple(v) for k, v in (choices or {}).items()},
                               dict(types or {}), {k: tuple(v) for k, v in (bounds or {}).items()}, version,
                               run.__module__)
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


def get(name):
    """The registered method `name`, its module imported so that `run` is there."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    if METHODS[name].run is None:
        importlib.import_module(METHODS[name].module)      # registers it again, with its run
    return METHODS[name]


def __getattr__(name):
    """UnlearnTask, finetune and unlearn live in trainables.methods.task (torch); plugins and callers
    import them from here, as before the registry stopped importing torch."""
    if name in ("UnlearnTask", "finetune", "unlearn"):
        from trainables.methods import task
        return getattr(task, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- specs.json: the registry without imports

SPECS_FILE = Path(__file__).with_name("specs.json")
TYPES = {"float": float, "int": int}     # `types=` values, by name in specs.json


def _module_names():
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("__"))


def sources_hash():
    """SHA-256 of every module of this package and of trainables/similarity.py (trw's choices)."""
    digest = hashlib.sha256()
    files = [Path(__file__).with_name(f"{name}.py") for name in _module_names()]
    for path in [Path(__file__), *files, Path(__file__).parent.parent / "similarity.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def import_all():
    """Import every module of this package (each registers its methods)."""
    for name in _module_names():
        importlib.import_module(f"{__name__}.{name}")


def specs():
    """specs.json's content for the registry as it is now (every module imported)."""
    import_all()
    return {"sources_hash": sources_hash(), "methods": [
        {"name": m.name, "module": m.module, "defaults": m.defaults, "choices": {k: list(v) for k, v in m.choices.items()},
         "types": {k: t.__name__ for k, t in m.types.items()}, "bounds": {k: list(v) for k, v in m.bounds.items()},
         "version": m.version}
        for m in sorted(METHODS.values(), key=lambda m: m.name) if m.module.startswith(__name__ + ".")]}


def _load_specs():
    """Fill METHODS from specs.json when it matches the sources; otherwise import every module."""
    try:
        saved = json.loads(SPECS_FILE.read_text())
    except (OSError, ValueError):
        saved = None
    if saved is None or saved.get("sources_hash") != sources_hash():
        import_all()
        return
    for spec in saved["methods"]:
        METHODS.setdefault(spec["name"], Method(
            spec["name"], None, spec["defaults"], {k: tuple(v) for k, v in spec["choices"].items()},
            {k: TYPES[t] for k, t in spec["types"].items()}, {k: tuple(v) for k, v in spec["bounds"].items()},
            spec["version"], spec["module"]))


_load_specs()
