"""`unlearn-grid best GRID --out FILE`: the grid that evaluates each searched method at its default and
at its best params, side by side, on the holdout split.

It is the search grid without its `search:` block: every seed, `evaluation.split: holdout` (the test half
the search never read), and per method a list of two param sets: first its default params (the fixed
params plus the default point of the searched ones: the search's first trial), then the fixed params
plus the best searched ones. When the search kept the default (best == default) the method has one
param set. So the search's "best <= default", true on the validation half it was chosen on, is measured
again on the holdout half: the winner's curse. The two entries are told apart by their values:
tables label a method's rows by the params that vary within it, and `unlearn-grid tables` on the search
experiment matches the holdout runs against each cell's default point (its parent run's params) and
best (its `best.<param>` tags) (analysis.tables.search_holdout). When cells of one method found
different best params (several datasets, archs or forget sets), one file per (dataset, arch, forget
set) is written instead, all naming the same experiment, `<search name>-best`.
"""
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from grid.plan import config, search_space
from grid.tracking import location


class NotSearched(LookupError):
    """The search grid has cells without a finished search."""


def best_params(plan, tracking_uri):
    """{cell key: best searched params} from the finished parent runs; NotSearched naming what is missing."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(plan.name)
    found = {}
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], "tags.stage = 'search' and attributes.status = 'FINISHED'",
                                      max_results=50_000):
            found[run.data.tags["key"]] = run.data.tags
    missing = [c for c in plan.search if c["key"] not in found]
    if missing:
        names = ", ".join(f"{c['spec']['method']}/{c['spec']['dataset']}/{c['spec']['arch']}/f{c['spec']['forget_classes']}"
                          for c in missing)
        raise NotSearched(f"{len(missing)} of {len(plan.search)} search cells of {plan.name!r} have no finished search "
                          f"in {tracking_uri} ({names}); run `unlearn-grid run {plan.name}` first")
    return {c["key"]: {k: search_space.typed_value(s, found[c["key"]][f"best.{k}"]) for k, s in c["spec"]["space"].items()}
            for c in plan.search}


def best_grids(grid, tracking_uri):
    """[(suffix, grid dict)]: one grid (suffix '') or one per (dataset, arch, forget set)."""
    plan = config.load(grid)
    if not plan.search:
        raise config.GridError(grid, [("search", "this grid has no search block: nothing to pick best params from")])
    raw = yaml.safe_load(config.resolve(grid).read_text())
    best = best_params(plan, tracking_uri)
    fixed = raw.get("methods") or {}
    groups = {}
    for cell in plan.search:
        spec = cell["spec"]
        group = (spec["dataset"], spec["arch"], tuple(spec["forget_classes"]))
        own = fixed.get(spec["method"]) or {}
        default = {**own, **{k: spec["params"][k] for k in spec["space"]}}
        chosen = {**own, **best[cell["key"]]}
        if spec["method"] in groups.setdefault(group, {}):
            raise config.GridError(grid, [(f"methods.{spec['method']}", "lists of fixed params make several cells of "
                                           "one method per forget set; a grid file cannot give each its own best params")])
        groups[group][spec["method"]] = default if chosen == default else [default, chosen]   # a tie: one entry
    base = {k: v for k, v in raw.items() if k != "search"}
    base.update(name=f"{plan.name}-best", evaluation={**(raw.get("evaluation") or {}), "split": "holdout"})
    distinct = {repr(methods) for methods in groups.values()}
    if len(distinct) == 1:
        return [("", {**base, "methods": next(iter(groups.values()))})]
    return [(f".{dataset}.{arch}.f{'+'.join(map(str, forget))}",
             {**base, "datasets": dataset, "archs": arch, "forget_classes": [list(forget)], "methods": methods})
            for (dataset, arch, forget), methods in groups.items()]


def write(grid, out, tracking_uri=None):
    """Write the best-params grid file(s); returns their paths."""
    tracking_uri = tracking_uri or location.default_tracking_uri()
    out = Path(out)
    paths = []
    for suffix, content in best_grids(grid, tracking_uri):
        path = out.with_name(out.stem + suffix + out.suffix) if suffix else out
        header = (f"# Written by `unlearn-grid best {grid}` on {time.strftime('%Y-%m-%d %H:%M')}: each method at its\n"
                  f"# default params (first entry) and at the best params its search found (second entry; one entry\n"
                  f"# where the search kept the default), evaluated over every seed on the holdout split (the test\n"
                  f"# half the search never read).\n#   unlearn-grid run {path}\n"
                  f"#   unlearn-grid tables {content['name'].removesuffix('-best')}   # the search table: default and best on the holdout\n")
        config.build_plan(content, source=path)   # what we write must be a valid grid
        path.write_text(header + yaml.safe_dump(content, sort_keys=False))
        paths.append(path)
    return paths
