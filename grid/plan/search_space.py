"""The `search:` block of a grid file: validation, search spaces and the cells a search runs.

    search:
      objective: retrain_gap            # or mia_nn_gap (analysis/objective.py)
      split: validation                 # the only value: the objective never reads what tables report on
      budget: {samples: 24, max_concurrent: 4}
      algorithm: optuna                 # optuna (TPE) | random
      early_stopping: {grace_epochs: 2} # ASHA over epochs; omit to run every trial to the end;
                                        # refused when a method searches epochs
      seed: 0                           # the samplers' seed (each cell's is derived from it and the cell)
      methods:
        trw: {lam: {loguniform: [0.1, 50]}, temperature: {loguniform: [0.02, 2]}}

A cell is one (dataset, arch, forget set, method, fixed params) searched on the grid's first seed and
first unlearning seed. Fixed params come from the grid's `methods:` (lists there make more cells);
a searched param's value there (or the method's default) is the default point, evaluated first.
"""
import itertools
import math

from analysis.objective import OBJECTIVES
from trainables import methods
from trainables.datasets import get_info
from trainables.keys import trial_key

FIELDS = {"objective", "split", "budget", "algorithm", "early_stopping", "seed", "methods"}
ALGORITHMS = ("optuna", "random")
SPLITS = ("validation",)
BUDGET_DEFAULTS = {"samples": 16, "max_concurrent": 4}
SPACE_KINDS = {"loguniform": "float", "uniform": "float", "int": "int", "choice": "any"}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def param_kind(method, param):
    """'float', 'int' or 'other' (bool, str, choices): which spaces a method param accepts."""
    spec = methods.METHODS[method]
    default = spec.defaults[param]
    if param in spec.choices or isinstance(default, (bool, str)):
        return "other"
    if isinstance(default, float) or (default is None and spec.types.get(param) is float):
        return "float"
    return "int"


def _check_space(method, param, space, where, problems):
    """One param's space -> (kind, values) or None after adding problems."""
    if param not in methods.METHODS[method].defaults:
        problems.append((where, f"unknown parameter for {method}; allowed: {sorted(methods.METHODS[method].defaults)}"))
        return None
    if not isinstance(space, dict) or len(space) != 1 or next(iter(space)) not in SPACE_KINDS:
        problems.append((where, f"must be one of {{loguniform: [low, high]}}, {{uniform: [low, high]}}, "
                                f"{{int: [low, high]}}, {{choice: [values]}}; got {space!r}"))
        return None
    kind, values = next(iter(space.items()))
    accepted = param_kind(method, param)
    if SPACE_KINDS[kind] not in ("any", accepted):
        allowed = {"float": "loguniform, uniform or choice", "int": "int or choice", "other": "choice"}[accepted]
        problems.append((where, f"{param} is a{'n' if accepted == 'int' else ''} {accepted} parameter: use {allowed}, got {kind}"))
        return None
    if not isinstance(values, list) or not values:
        problems.append((where, f"{kind} takes a non-empty list, got {values!r}"))
        return None
    if kind != "choice":
        number = _is_int if kind == "int" else _is_number
        if len(values) != 2 or not all(number(v) for v in values) or values[0] >= values[1]:
            problems.append((where, f"{kind} takes [low, high] {'whole numbers' if kind == 'int' else 'numbers'} "
                                    f"with low < high, got {values!r}"))
            return None
        if kind == "loguniform" and values[0] <= 0:
            problems.append((where, f"loguniform needs low > 0, got {values!r}"))
            return None
    for value in values:   # the ends of a range (every value of a choice) must be valid params
        for _, message in methods.check_params(method, {param: value}):
            problems.append((where, f"{value!r}: {message}"))
    return kind, list(values)


def contains(space, value):
    kind, values = space
    if kind == "choice":
        return value in values
    return _is_number(value) and values[0] <= value <= values[1]


def typed_value(space, text):
    """A searched value from its MLflow param/tag string."""
    kind, values = space
    if kind == "choice":
        return next(v for v in values if str(v) == text)
    return int(text) if kind == "int" else float(text)


def describe(space):
    """'loguniform [0.1, 50]': how a space is shown in MLflow tags and tables."""
    kind, values = space
    return f"{kind} [{', '.join(str(v) for v in values)}]"


def check(raw, grid_methods, problems):
    """The validated search block (or None when the grid has none); problems name their field."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(("search", f"must be a mapping with fields {sorted(FIELDS)}, got {raw!r}"))
        return None
    for key in raw:
        if key not in FIELDS:
            problems.append((f"search.{key}", f"unknown field; allowed: {sorted(FIELDS)}"))
    search = {"objective": raw.get("objective", "retrain_gap"), "split": raw.get("split", "validation"),
              "algorithm": raw.get("algorithm", "optuna"), "seed": raw.get("seed", 0)}
    for key, allowed in (("objective", OBJECTIVES), ("split", SPLITS), ("algorithm", ALGORITHMS)):
        if search[key] not in allowed:
            problems.append((f"search.{key}", f"must be one of {list(allowed)}, got {search[key]!r}"))
    if not _is_int(search["seed"]) or search["seed"] < 0:
        problems.append(("search.seed", f"must be a whole number >= 0, got {search['seed']!r}"))
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        problems.append(("search.budget", f"must be a mapping with keys {sorted(BUDGET_DEFAULTS)}, got {budget!r}"))
        budget = {}
    for key in budget:
        if key not in BUDGET_DEFAULTS:
            problems.append((f"search.budget.{key}", f"unknown field; allowed: {sorted(BUDGET_DEFAULTS)}"))
    for key, default in BUDGET_DEFAULTS.items():
        search[key] = budget.get(key, default)
        if not _is_int(search[key]) or search[key] < 1:
            problems.append((f"search.budget.{key}", f"must be a whole number >= 1, got {search[key]!r}"))
    stopping = raw.get("early_stopping")
    search["grace_epochs"] = None
    if stopping is not None:
        if not isinstance(stopping, dict) or set(stopping) != {"grace_epochs"}:
            problems.append(("search.early_stopping", f"must be {{grace_epochs: N}} (or omitted: no early stopping), got {stopping!r}"))
        elif not _is_int(stopping["grace_epochs"]) or stopping["grace_epochs"] < 1:
            problems.append(("search.early_stopping.grace_epochs", f"must be a whole number >= 1, got {stopping['grace_epochs']!r}"))
        else:
            search["grace_epochs"] = stopping["grace_epochs"]
    spaces = raw.get("methods")
    search["methods"] = {}
    _check_stopping_with_epochs(search["grace_epochs"], spaces, problems)
    if not isinstance(spaces, dict) or not spaces:
        problems.append(("search.methods", f"missing or empty; give method -> {{param: space}}, methods: {sorted(methods.METHODS)}"))
        return search
    for method, params in spaces.items():
        where = f"search.methods.{method}"
        if method not in methods.METHODS:
            problems.append((where, f"unknown method; allowed: {sorted(methods.METHODS)}"))
            continue
        if not isinstance(params, dict) or not params:
            problems.append((where, "must map at least one parameter to a space, e.g. {lam: {loguniform: [0.1, 50]}}"))
            continue
        checked = {p: _check_space(method, p, s, f"{where}.{p}", problems) for p, s in params.items()}
        search["methods"][method] = {p: s for p, s in checked.items() if s is not None}
        combos = grid_methods.get(method, [{}])
        for param in list(search["methods"][method]):
            if len({repr(c.get(param)) for c in combos}) > 1:
                problems.append((f"methods.{method}.{param}", f"a list makes cells and a space searches: give "
                                                              f"{param} one value (the default point) or no space"))
                del search["methods"][method][param]
        for combo in combos:
            resolved = methods.resolve_params(method, combo)
            for param, space in search["methods"][method].items():
                if not contains(space, resolved[param]):
                    source = f"methods.{method}.{param}" if param in combo else f"{method}'s default"
                    problems.append((f"{where}.{param}", f"the default point ({source} = {resolved[param]!r}) is outside "
                                                          f"{describe(space)}: it is evaluated first, so widen the space "
                                                          f"or set methods.{method}.{param} inside it"))
    for method in grid_methods:
        if method not in spaces:
            problems.append((f"methods.{method}", f"a search grid searches every method it lists: add a space under "
                                                  f"search.methods.{method} or remove it; searched: {sorted(spaces)}"))
    return search


def _check_stopping_with_epochs(grace_epochs, spaces, problems):
    """Refuse early stopping when a method searches `epochs`. ASHA compares trials at the same epoch: a
    long trial judged at an early rung is measured mid-schedule (l1's alpha decay, a StepLR-style decay
    and every schedule that depends on the total epoch count are not finished), against short trials
    that have finished theirs, so ASHA would favour short budgets. Epochs as the fidelity (one trial per
    other point, evaluated at each candidate epoch) is wrong for those same methods: the model after 5
    of 20 epochs is not the model trained for 5. So the grid chooses: search epochs, or stop early."""
    if grace_epochs is None or not isinstance(spaces, dict):
        return
    searching = sorted(m for m, params in spaces.items() if isinstance(params, dict) and "epochs" in params)
    if searching:
        problems.append(("search.early_stopping", f"ASHA cannot be fair when epochs is searched ({', '.join(searching)}): "
                                                  "it would compare long trials mid-schedule with finished short "
                                                  "ones and favour short budgets; remove early_stopping (every "
                                                  "trial runs to its end) or take epochs out of the space"))


def max_epochs(cell_spec):
    """The most epochs a trial of the cell can run (ASHA's max_t)."""
    space = cell_spec["space"].get("epochs")
    if space is None:
        return cell_spec["params"].get("epochs", 1)
    return max(space[1])


def cells(plan, search, originals, retrains):
    """One search cell per (dataset, arch, forget set, method, fixed params): {spec, key, original_key,
    retrain_key}. The key leaves out the budget, so a larger budget continues a finished search."""
    grid = plan.grid
    seed, unlearn_seed = grid["seeds"][0], grid["unlearn_seeds"][0]
    out = []
    for (dataset, arch), (method, space) in itertools.product(originals, search["methods"].items()):
        for forget_classes in grid["forget_sets"][dataset]:
            for combo in grid["methods"].get(method, [{}]):
                spec = {"stage": "search", "dataset": dataset, "dataset_version": get_info(dataset).version,
                        "arch": arch, "train": grid["train"], "seed": seed, "unlearn_seed": unlearn_seed,
                        "forget_classes": forget_classes, "method": method, **methods.version_fields(method),
                        "params": methods.resolve_params(method, combo), "space": space,
                        "evaluation": grid["evaluation"], "objective": search["objective"],
                        "split": search["split"], "algorithm": search["algorithm"], "search_seed": search["seed"]}
                out.append({"spec": spec, "key": trial_key(spec), "original_key": originals[(dataset, arch)],
                            "retrain_key": retrains[(dataset, arch, tuple(forget_classes))]})
    return out
