"""Cost model for `unlearn-grid validate`: trials, cached work and GPU-hours of a grid, before it runs.

Pure: no Ray, no MLflow. What is already done reaches `estimate` as sets of trial keys (the CLI looks
them up in the tracking store and storage), so everything here is unit-testable.

Unit of work: one *training image* = one sample through a forward + backward pass. A forward-only
pass (evaluation, teacher logits) costs ~1/3 of that (`FORWARD_COST`). Every trial ends with an
evaluation = one forward pass over train + test. GPU-hours = images / throughput / 3600, with the
throughput (training images/s on one GPU) keyed "arch/side" (side = input height).

This is a model, not a measurement: data loading, augmentation, checkpoints, MLflow logging, the
SVMs of the evaluation and Ray start-up are not counted, and methods that stop early (l2ul, scar) are
counted at their epoch bound.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from grid.plan import search_space
from trainables.datasets import get_info

FORWARD_COST = 1 / 3    # a forward-only image, in training images (backward ≈ 2 forwards)

# ASSUMED training throughput, images/s on one GPU, keyed "arch/side". NOT measured on this project's
# machines: rough figures for an H100-class GPU with the fast path (uint8 data on the GPU, mixed
# precision). Measure instead with `bench/train_throughput.py --save FILE` and pass `--throughput FILE`.
ASSUMED_THROUGHPUT = {
    "resnet18/32": 20_000,
    "vgg19/32": 15_000,
    "resnet18/28": 20_000,
    "vgg19/28": 15_000,
    "resnet18_imagenet/64": 20_000,
    "small_cnn/8": 200_000,
    "mlp/1": 1_000_000,
}
ASSUMED_LABEL = ("ASSUMED (default table in grid/plan/cost.py, not measured on this project's machines; "
                 "H100-class GPU, fast path)")
THROUGHPUT_FORMAT = ('{"device": "NVIDIA H100 80GB HBM3", "path": "fast", '
                     '"images_per_second": {"resnet18/32": 23456.7, ...}}')


def _epochs(params):
    return params.get("epochs", 1)


# Work of one unlearn trial before its evaluation, in training images: method -> (rule, what it counts).
# r / f = retain / forget training samples. Methods not listed: epochs × (r + f) (an upper bound).
UNLEARN_WORK = {
    "original": (lambda p, r, f: 0.0,
                 "the Original row: evaluation only"),
    "ft": (lambda p, r, f: _epochs(p) * r,
           "epochs × r (CE on retain)"),
    "l1": (lambda p, r, f: _epochs(p) * r,
           "epochs × r (CE + l1 on retain)"),
    "rl": (lambda p, r, f: _epochs(p) * (r + f),
           "epochs × (r + f) (relabelled forget + retain)"),
    "ga": (lambda p, r, f: _epochs(p) * f,
           "epochs × f (ascent on forget only)"),
    "bu_shrink": (lambda p, r, f: f + _epochs(p) * f,
                  "f (one FGSM step) + epochs × f (CE on forget only)"),
    "bu_expand": (lambda p, r, f: _epochs(p) * f,
                  "epochs × f (forget only, into the shadow class)"),
    "salun": (lambda p, r, f: f + _epochs(p) * (r + f),
              "f (saliency pass) + epochs × (r + f) (masked RL)"),
    "svd": (lambda p, r, f: FORWARD_COST * (min(p.get("num_samples", 900), r) + min(p.get("num_samples", 900), f)),
            "one forward pass over ≤ num_samples retain + ≤ num_samples forget (~1800; the SVDs are not counted)"),
    "scrub": (lambda p, r, f: FORWARD_COST * (r + f) + _epochs(p) * r + min(p.get("msteps", 2), _epochs(p)) * f,
              "teacher logits (r + f)/3 + epochs × r (min passes) + msteps × f (max passes)"),
    "scar": (lambda p, r, f: FORWARD_COST * (r + f + p.get("num_surrogates", 1024)) + _epochs(p) * (
                 2 * p.get("num_surrogates", 1024)
                 + math.ceil(p.get("num_surrogates", 1024) / p.get("batch_size", 128)) * FORWARD_COST * f),
             "statistics (r + f + surrogates)/3 + epochs × (2 × surrogates + steps × f/3 forget-accuracy "
             "checks); epochs is a bound (stops at target accuracy)"),
    "l2ul": (lambda p, r, f: p.get("pgd_steps", 100) * p.get("num_adv", 1) * f + f
             + _epochs(p) * ((1 + p.get("num_adv", 1)) * f + FORWARD_COST * f),
             "PGD pgd_steps × num_adv × f + MAS f + epochs × ((1 + num_adv) × f + f/3 check); "
             "epochs is a bound (stops at forget accuracy 0)"),
    "rescale": (lambda p, r, f: FORWARD_COST * f + _epochs(p) * (r + f),
                "targets f/3 + epochs × (r + f)"),
    "trw": (lambda p, r, f: FORWARD_COST * f + _epochs(p) * (r + f),
            "targets f/3 + epochs × (r + f)"),
    "trw_2r": (lambda p, r, f: FORWARD_COST * f + _epochs(p) * (r + f),
               "targets f/3 + epochs × (r + f) (backward still crosses the network)"),
}
DEFAULT_UNLEARN_RULE = "epochs × (r + f), an upper bound (default 1 epoch if the method has no epochs param)"


class ThroughputError(ValueError):
    """A --throughput file that is missing or not in bench/train_throughput.py's format."""


@dataclass(frozen=True)
class Throughput:
    """Training images/s per GPU keyed "arch/side"; measured entries win, the assumed table fills in."""
    measured: dict = field(default_factory=dict)
    device: str = None
    path: str = None            # the bench's training path, e.g. "fast"
    file: str = None
    assumed: dict = field(default_factory=lambda: dict(ASSUMED_THROUGHPUT))

    def lookup(self, arch, side):
        """(images/s, source) for one arch/side; (None, "unknown") for an arch in neither table.

        A side missing from a table is scaled from the same arch's entry nearest in pixel count
        (throughput ∝ 1/(H·W)); the measured table is tried first, for every arch it has."""
        for source, table in (("measured", self.measured), ("assumed", self.assumed)):
            key = f"{arch}/{side}"
            if key in table:
                return float(table[key]), source
            sides = [int(k.split("/")[1]) for k in table if k.split("/")[0] == arch]
            if sides:
                nearest = min(sides, key=lambda s: (abs(s * s - side * side), -s))
                return float(table[f"{arch}/{nearest}"]) * nearest ** 2 / side ** 2, f"{source}, scaled from {arch}/{nearest}"
        return None, "unknown"

    def describe(self):
        if self.measured:
            return (f"measured on {self.device}" + (f" ({self.path} path)" if self.path else "")
                    + f", from {self.file}; archs it lacks fall back to the " + ASSUMED_LABEL)
        return ASSUMED_LABEL + "; measure with bench/train_throughput.py --save FILE, then --throughput FILE"


def load_throughput(path):
    """The measured table written by `bench/train_throughput.py --save FILE`; ThroughputError if unusable."""
    def fail(reason):
        return ThroughputError(f"throughput file {path}: {reason}; expected JSON as written by "
                               f"bench/train_throughput.py --save FILE: {THROUGHPUT_FORMAT}")
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise fail("no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"not readable JSON ({error})") from None
    if not isinstance(raw, dict):
        raise fail("not a JSON object")
    table = raw.get("images_per_second")
    if not isinstance(table, dict) or not table:
        raise fail('"images_per_second" missing or empty')
    for key, value in table.items():
        arch, _, side = str(key).partition("/")
        if not arch or not side.isdigit() or int(side) < 1:
            raise fail(f'key {key!r} is not "arch/side" (e.g. "resnet18/32")')
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise fail(f"{key}: images/s must be a number > 0, got {value!r}")
    device = raw.get("device")
    if not isinstance(device, str) or not device.strip():
        raise fail('"device" missing (the GPU it was measured on)')
    mode = raw.get("path")
    return Throughput(measured={k: float(v) for k, v in table.items()}, device=device,
                      path=mode if isinstance(mode, str) else None, file=str(path))


def split_sizes(dataset):
    """(train, test) samples of a registered dataset (trainables/datasets.py), None when the registry does
    not know them (a plugin's dataset may leave them out)."""
    info = get_info(dataset)
    return None if info.train_size is None or info.test_size is None else (info.train_size, info.test_size)


def trial_images(spec):
    """Training images of one trial (stage original/retrain/unlearn), evaluation included; None if the
    dataset's split sizes are not known (split_sizes)."""
    sizes = split_sizes(spec["dataset"])
    if sizes is None:
        return None
    n_train, n_test = sizes
    # splits are treated as class-balanced: a forget set of k classes holds k / num_classes of the train split
    num_classes = get_info(spec["dataset"]).num_classes
    forget = n_train * len(spec.get("forget_classes", [])) / num_classes
    retain = n_train - forget
    evaluation = FORWARD_COST * (n_train + n_test)
    if spec["stage"] == "original":
        return spec["train"]["epochs"] * n_train + evaluation
    if spec["stage"] == "retrain":
        return spec["train"]["epochs"] * retain + evaluation
    rule = UNLEARN_WORK.get(spec["method"], (lambda p, r, f: _epochs(p) * (r + f), DEFAULT_UNLEARN_RULE))[0]
    return rule(spec["params"], retain, forget) + evaluation


def search_trial_images(cell_spec):
    """Training images of one search trial, an upper bound: the method's rule at the most epochs its
    space allows (the other searched params at their defaults), plus the validation half of the test
    split evaluated after every epoch and the original's logits once. ASHA stops many trials earlier."""
    sizes = split_sizes(cell_spec["dataset"])
    if sizes is None:
        return None
    epochs = search_space.max_epochs(cell_spec)
    spec = {**cell_spec, "stage": "unlearn", "params": {**cell_spec["params"], "epochs": epochs}}
    n_train, n_test = sizes
    # trial_images counts one train + test evaluation; a search trial evaluates validation only
    return trial_images(spec) - FORWARD_COST * (n_train + n_test) + FORWARD_COST * epochs * n_test / 2


def throughput_key(spec):
    return spec["arch"], get_info(spec["dataset"]).input_shape[1]


@dataclass
class StageCost:
    stage: str
    trials: int = 0
    done: int = 0                  # cached reference models / finished runs
    images: float = 0.0            # whole grid (known parts)
    images_todo: float = 0.0
    hours: float = 0.0             # GPU-hours, whole grid (known parts)
    hours_todo: float = 0.0
    longest_todo: float = 0.0      # GPU-hours of the longest trial still to run
    unknown: set = field(default_factory=set)   # "dataset/arch/side" with no throughput or size

    @property
    def todo(self):
        return self.trials - self.done


@dataclass
class Group:
    """One (dataset, arch) of the grid: its throughput and GPU-hours (all stages)."""
    dataset: str
    arch: str
    side: int
    images_per_second: float
    source: str
    hours: float = 0.0
    hours_todo: float = 0.0
    known: bool = True


@dataclass
class Estimate:
    name: str
    stages: dict                   # stage -> StageCost (original, retrain, unlearn[, ulira])
    groups: list
    throughput: Throughput
    gpu: float                     # resources.gpu per trial
    bank: dict = field(default_factory=dict)   # U-LiRA bank: stage -> (trials, GPU-hours or None), _bank_cost
    bank_models: int = 0                       # ulira.bank: K

    @property
    def hours(self):
        return sum(s.hours for s in self.stages.values())

    @property
    def hours_todo(self):
        return sum(s.hours_todo for s in self.stages.values())

    @property
    def unknown(self):
        return set().union(*(s.unknown for s in self.stages.values()))

    def sharing(self):
        """Trials per GPU the grid's shape allows, 1/resources.gpu (1 for gpu >= 1)."""
        return max(1, math.floor(1 / self.gpu + 1e-6)) if 0 < self.gpu < 1 else 1

    def wall_hours(self, gpus=1, trials_per_gpu=None):
        """Wall-clock of what remains on `gpus` GPUs, stages one after another: per stage the larger of
        its GPU-hours spread over the GPUs the trials can use and its longest trial. Trials sharing a
        GPU split its throughput, so sharing does not shrink the GPU-hours, and a trial that shares its
        GPU with k-1 others takes up to k times its GPU-hours (k = `trials_per_gpu`, default what the
        shape allows, 1/gpu; a cluster's node types may fit fewer, grid/plan/shapes.py), though never
        longer than the stage's GPU-hours (its GPU finishes all of them by then)."""
        if self.gpu <= 0:
            return None
        sharing = self.sharing() if trials_per_gpu is None else max(1.0, trials_per_gpu)
        usable = gpus if self.gpu <= 1 else max(1, math.floor(gpus / self.gpu))   # one GPU busy per trial
        return sum(max(s.hours_todo / usable, min(s.longest_todo * sharing, s.hours_todo))
                   for s in self.stages.values())


def estimate(plan, throughput=None, cached_keys=frozenset(), finished_unlearn_keys=frozenset(),
             finished_ulira_keys=frozenset(), finished_search_keys=frozenset()):
    """Cost of `plan` (a config.Plan): per stage, trials, done, images and GPU-hours (whole grid and
    still to run). cached_keys: original/Retrain keys with a finished run and stored weights;
    finished_unlearn_keys / finished_ulira_keys: keys finished in the grid's experiment."""
    throughput = throughput or Throughput()
    groups = {}
    stages = {}
    done_sets = {"original": cached_keys, "retrain": cached_keys, "unlearn": finished_unlearn_keys}
    for stage, trials in plan.stages().items():
        cost = stages[stage] = StageCost(stage, trials=len(trials))
        for trial in trials:
            spec = trial["spec"]
            arch, side = throughput_key(spec)
            group = groups.get((spec["dataset"], arch))
            if group is None:
                rate, source = throughput.lookup(arch, side)
                group = groups[(spec["dataset"], arch)] = Group(spec["dataset"], arch, side, rate, source)
            done = trial["key"] in done_sets[stage]
            cost.done += done
            images = trial_images(spec)
            if images is None or group.images_per_second is None:
                cost.unknown.add(f"{spec['dataset']}/{arch}/{side}")
                group.known = False
                continue
            hours = images / group.images_per_second / 3600
            cost.images += images
            cost.hours += hours
            group.hours += hours
            if not done:
                cost.images_todo += images
                cost.hours_todo += hours
                group.hours_todo += hours
                cost.longest_todo = max(cost.longest_todo, hours)
    if plan.search:
        stages["search"] = _search_cost(plan, groups, finished_search_keys)
    if plan.ulira:   # Ray tasks on stored logits: CPU seconds, no GPU
        stages["ulira"] = StageCost("ulira", trials=len(plan.ulira),
                                    done=sum(a["key"] in finished_ulira_keys for a in plan.ulira))
    return Estimate(plan.name, stages, list(groups.values()), throughput, plan.grid["resources"]["gpu"],
                    bank=_bank_cost(plan, groups), bank_models=plan.grid["ulira"].get("bank", 0))


BANK_ROLE = "ulira_bank"   # grid/plan/config.py BANK_ROLE


def _bank_cost(plan, groups):
    """{stage: (trials, GPU-hours or None when a throughput is unknown)} of the U-LiRA bank's trials
    (already counted in the stages above; this says what of them the bank adds); {} without a bank."""
    bank = {}
    for stage, trials in plan.stages().items():
        mine = [t for t in trials if t["spec"].get("role") == BANK_ROLE]
        if not mine:
            continue
        hours = 0.0
        for trial in mine:
            images = trial_images(trial["spec"])
            rate = groups[(trial["spec"]["dataset"], throughput_key(trial["spec"])[0])].images_per_second
            if images is None or rate is None:
                hours = None
                break
            hours += images / rate / 3600
        bank[stage] = (len(mine), hours)
    return bank


def bank_line(est):
    """What `validate` prints about a U-LiRA bank of K: its extra trials and their GPU-hours."""
    if not est.bank:
        return None
    parts = [f"{trials} {stage}" + ("" if hours is None else f" ({_hours(hours)} GPU-h)")
             for stage, (trials, hours) in est.bank.items()]
    return (f"U-LiRA bank (ulira.bank {est.bank_models}): adds " + ", ".join(parts)
            + " trials (counted above; their runs stay out of the tables)")


def _search_cost(plan, groups, finished_search_keys):
    """Search cells × samples trials, each at search_trial_images (an upper bound); a finished cell is done."""
    samples = plan.grid["search"]["samples"]
    cost = StageCost("search", trials=len(plan.search) * samples)
    for cell in plan.search:
        spec = cell["spec"]
        group = groups[(spec["dataset"], throughput_key(spec)[0])]
        done = cell["key"] in finished_search_keys
        cost.done += samples * done
        images = search_trial_images(spec)
        if images is None or group.images_per_second is None:
            cost.unknown.add(f"{spec['dataset']}/{group.arch}/{group.side}")
            continue
        hours = images / group.images_per_second / 3600
        cost.images += samples * images
        cost.hours += samples * hours
        group.hours += samples * hours
        if not done:
            cost.images_todo += samples * images
            cost.hours_todo += samples * hours
            group.hours_todo += samples * hours
            cost.longest_todo = max(cost.longest_todo, hours)
    return cost


def _count(images):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if images >= scale:
            return f"{images / scale:.1f}{unit}"
    return f"{images:.0f}"


def _hours(hours, unknown=False):
    if unknown and not hours:
        return "unknown"
    text = ("0" if hours == 0 else "<0.01" if hours < 0.01 else f"{hours:.2f}" if hours < 10
            else f"{hours:.1f}" if hours < 100 else f"{hours:,.0f}")
    return f"≥{text}" if unknown else text   # ≥: some trials have no throughput (listed below)


def _table(rows, right=()):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def cluster_wall(est, cap):
    """(wall-clock hours, trials per GPU) of what remains on a cluster at its maximum (a shapes.Capacity):
    its GPUs, each trial slowed by the most trials that share one GPU on a node type it runs on."""
    sharing = max((f.per_gpu for f in cap.fits if f.per_node and cap.nodes[f.node_type.name] and f.per_gpu),
                  default=1)
    return (est.wall_hours(cap.gpus, trials_per_gpu=sharing) if cap.gpus > 0 else None), sharing


def format_report(est, gpus=1, store_note=None, cluster=None, cluster_capacity=None):
    """The cost report as aligned text (what `unlearn-grid validate` prints after its first line). With
    `cluster` (shapes.Cluster) and its `cluster_capacity` (shapes.capacity for the grid's resources) the
    wall-clock is the cluster's at its maximum; else `gpus` GPUs at the trials per GPU the shape allows."""
    lines = []
    if store_note:
        lines.append(store_note)
    lines.append("cost estimate (1 image = forward + backward; evaluation = train + test forward at 1/3):")
    rows = [("stage", "trials", "done", "to run", "images to run", "GPU-h to run", "GPU-h whole grid")]
    for cost in est.stages.values():
        if cost.stage == "ulira":
            rows.append((cost.stage, cost.trials, cost.done, cost.todo, "-", "0 (driver)", "0 (driver)"))
            continue
        unknown = bool(cost.unknown)
        rows.append((cost.stage, cost.trials, cost.done, cost.todo, _count(cost.images_todo),
                     _hours(cost.hours_todo, unknown), _hours(cost.hours, unknown)))
    totals = [sum(c.trials for c in est.stages.values()), sum(c.done for c in est.stages.values())]
    unknown = bool(est.unknown)
    rows.append(("total", *totals, totals[0] - totals[1],
                 _count(sum(c.images_todo for c in est.stages.values())),
                 _hours(est.hours_todo, unknown), _hours(est.hours, unknown)))
    lines += _table(rows, right=range(1, 7))
    if est.bank:
        lines.append("  " + bank_line(est))
    lines.append("  done: reference models cached (FINISHED run + stored weights), unlearn/U-LiRA runs "
                 "FINISHED in the grid's experiment" + (", search cells FINISHED (their whole budget)" if "search" in est.stages else ""))
    if "search" in est.stages:
        lines.append("  search: every trial counted at the most epochs its space allows and run to the end (an upper "
                     "bound: ASHA stops many early)")
    rows = [("dataset/arch/side", "img/s per GPU", "source", "GPU-h to run", "GPU-h whole grid")]
    for g in est.groups:
        rate = "unknown" if g.images_per_second is None else f"{g.images_per_second:,.0f}"
        rows.append((f"{g.dataset}/{g.arch}/{g.side}", rate, g.source,
                     _hours(g.hours_todo, not g.known), _hours(g.hours, not g.known)))
    lines += _table(rows, right=(1, 3, 4))
    lines.append(f"throughput: {est.throughput.describe()}")
    if est.unknown:
        lines.append(f"unknown: no throughput (or dataset size) for {sorted(est.unknown)}: their GPU-hours are "
                     f"not guessed (add them to --throughput or ASSUMED_THROUGHPUT, or the dataset's train_size/test_size)")
    if est.gpu <= 0:
        lines.append("wall-clock: resources.gpu is 0, the trials run on CPU (not modelled; GPU-hours say what "
                     "the same work takes on GPUs)")
    elif cluster is not None:
        wall, sharing = cluster_wall(est, cluster_capacity)
        if wall is None:
            lines.append(f"wall-clock: no node type of {cluster.source} fits a trial (see the warning above)")
        else:
            lines.append(f"wall-clock of what remains on {cluster.source} at its maximum: "
                         f"{cluster_capacity.slots} trials at once on {cluster_capacity.gpus:g} GPUs, "
                         f"{sharing:g} per GPU (they split its throughput, so GPU-hours don't shrink; each "
                         f"takes {sharing:g}× its GPU-hours); stages run one after another: "
                         f"≈ {_hours(wall, unknown)} h"
                         + ("; optimistic where a GPU is partly idle (warning above): the model lets a trial "
                            "alone on a GPU use all of it, which a small model rarely does"
                            if any(f.idle_gpu and cluster_capacity.nodes[f.node_type.name]
                                   for f in cluster_capacity.fits) else ""))
    else:
        wall = est.wall_hours(gpus)
        sharing = est.sharing()
        share = (f"ASSUMING {sharing} trials share each GPU (1/resources.gpu: no node types given, "
                 f"--cluster FILE checks what fits; they split its throughput, so GPU-hours don't shrink)"
                 if est.gpu < 1 else f"each trial holds {est.gpu:g} GPU(s) and uses one")
        lines.append(f"wall-clock of what remains at resources.gpu {est.gpu:g}: {share}; stages run one after "
                     f"another: ≈ {_hours(wall, unknown)} h on {gpus} GPU{'s' if gpus != 1 else ''}"
                     + (" (--gpus N or --cluster FILE for more)" if gpus == 1 else ""))
    return "\n".join(lines)
