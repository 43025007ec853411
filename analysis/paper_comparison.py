"""Our numbers beside the paper's published ones (pure pandas: no MLflow, no torch).

`paper_values.csv` (beside this module) holds every cell of the paper's Table 1 (MIA-NN, section 3.3),
Table 2 (CIFAR-10, section 5.1), Table 4 (MNIST and CIFAR-100, appendix B.3) and Table 5
(Tiny-ImageNet, appendix B.4), one row per cell, as the paper prints it: columns table, section,
dataset and arch (our registry names), forget (Table 1: the forget class's index; 'all' for the
tables averaged over forget classes), neighbour (Table 1: the paper's c*; empty elsewhere), method (our
method ids; 'Original' / 'Retrain' as our tables label those rows; the paper's one BU column is `bu`),
metric (our metric columns; Table 1's Retrain column is A_c*, stored as Retrain's mia_nn, as our MIA-NN
table shows it), value, std (the paper's ±, empty where it prints none) and setting (the paper's model,
training images, forget classes and seeds).

`comparison_table(runs, ...)` puts each of those cells beside our cell of the same dataset, arch,
method and metric, where our runs have one:
- datasets by PAPER_DATASETS (our `mnist5k`, a 5,000-image subset of MNIST's training set, and `mnist`
  both against the paper's MNIST); archs by paper_arch (our vgg19 against its VGG19 column, every other
  arch of ours against its ResNet-18 column). The setting columns say what differs.
- Table 1: per forget class, only where our runs forgot that class (alone): our MIA-NN table's cell
  (analysis.tables.mia_nn_table; the paper's Retrain cell beside our A_c* and, where the grid has >= 2
  Retrain models, beside the leave-one-out A_c* of its 'Retrain (held-out)' row), and a 'c*' row: our Retrain's c* (the most
  common over seeds) against the paper's.
- Tables 2, 4, 5: our accuracy table's cell (analysis.tables.accuracy_table) over the single-class
  forget sets we ran, whichever they are (the paper averages classes 0–9; `coverage` says which ours
  covers).
- The paper's BU is compared with both bu_shrink and bu_expand; a method with several labels (a λ
  sweep) gets a row per label. Nothing is tuned or adjusted: every comparable cell has its row,
  agreeing or not.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import noise_floor, tables
from analysis.statistics import Uncertainty

PAPER_VALUES = Path(__file__).with_name("paper_values.csv")
VALUE_COLUMNS = ("table", "section", "dataset", "arch", "forget", "neighbour", "method", "metric", "value", "std",
                 "setting")
AVERAGED = "all"   # paper_values.csv's forget for the tables averaged over forget classes

# our dataset -> the paper's; mnist5k is the 5,000-image MNIST subset registered in trainables
PAPER_DATASETS = {"mnist": "mnist", "mnist5k": "mnist", "cifar10": "cifar10", "cifar100": "cifar100",
                  "tinyimagenet": "tinyimagenet"}
DATASET_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "Tiny-ImageNet"}
ARCH_TITLES = {"resnet18": "ResNet-18", "vgg19": "VGG19", "resnet18_imagenet": "pretrained ResNet-18"}
# the forget classes the paper's averaged tables (2, 4, 5) average over: classes 0–9 on every dataset
# (CIFAR-100: apple … bottle; Tiny-ImageNet: goldfish … tarantula, its first ten wnids)
PAPER_FORGET_CLASSES = tuple(range(10))
OUR_METHODS = {"Original": ("original",), "Retrain": ("retrain",), "bu": ("bu_shrink", "bu_expand")}
METRIC_TITLES = {**tables.ACCURACY_METRICS, "mia_nn": "MIA-NN"}
REFERENCE_TITLE = "A_c* (Retrain's MIA-NN)"
HELD_OUT_TITLE = "A_c* (leave-one-out)"   # each Retrain model's MIA-NN against the reference of the others
NEIGHBOUR_TITLE = "c*"
OURS = "Ours"   # our cell's columns: 'Ours mean|std|ci_low|ci_high|n' (analysis.tables.STATS)
COLUMNS = ["Table", "Dataset", "Arch", "Forget", "Method", "Metric", "Paper", "Paper ±",
           *(f"{OURS} {stat}" for stat in tables.STATS), "Difference", "Paper inside CI", "Note",
           "Our setting", "Paper's setting"]


def load_paper_values(path=PAPER_VALUES):
    """paper_values.csv as text (values and ± exactly as the paper prints them, '' where it prints none)."""
    if not Path(path).is_file():   # an install without the package's data files
        raise FileNotFoundError(f"no paper values at {path}: the installed package lacks analysis/paper_values.csv "
                                "(pyproject.toml's [tool.setuptools.package-data] must list it)")
    values = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in VALUE_COLUMNS if c not in values]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(VALUE_COLUMNS)}")
    return values


def paper_arch(arch):
    """The paper's column our arch is compared with: 'vgg19' for vgg19, else 'resnet18' (its ResNet-18
    column; Table 1 and Tiny-ImageNet have only that one). The paper's own resnet18_imagenet is 'resnet18'."""
    return "vgg19" if arch == "vgg19" else "resnet18"


def has_paper_values(datasets):
    """Whether any of these datasets (ours) has paper values to compare with."""
    return any(d in PAPER_DATASETS for d in pd.unique(pd.Series(datasets).astype(str)))


def single_class_runs(runs):
    """The Retrain and unlearn runs of single-class forget sets: the paper's tables forget one class at a time."""
    keep = runs["stage"].isin(["retrain", "unlearn"]) & ~runs["forget_classes"].astype(str).str.contains(",")
    return runs[keep].reset_index(drop=True)


def _class_text(index, names=None):
    """'automobile (1)' with names, '8' where the name is the index."""
    name = str(names[int(index)]) if names is not None and int(index) < len(names) else str(index)
    return name if name == str(index) else f"{name} ({index})"


def _sorted_text(values):
    return sorted({str(v) for v in values}, key=tables._as_sortable)


def our_setting(runs, dataset, arch, class_names=None, train_sizes=None):
    """'<arch>, <N> training images; forget class(es) …; <k> seeds (…)[, <u> unlearning seeds]' of `runs`."""
    size = (train_sizes or {}).get(dataset)
    names = (class_names or {}).get(dataset)
    forgets = sorted({int(f) for f in runs["forget_classes"].astype(str)})
    seeds = _sorted_text(runs["seed"])
    unlearn_seeds = (runs.loc[runs["stage"] == "unlearn", "unlearn_seed"].dropna().astype(str).nunique()
                     if "unlearn_seed" in runs else 0)
    text = f"{arch}, " + (f"{int(size):,} training images" if size else "training images unknown")
    text += f"; forget class{'es' if len(forgets) > 1 else ''} " + ", ".join(_class_text(f, names) for f in forgets)
    text += f"; {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(seeds)})"
    if unlearn_seeds > 1:
        text += f", {unlearn_seeds} unlearning seeds"
    return text


def _labels_for(paper_method, labels, method_of):
    """Our row labels (in `labels`' order) of the methods the paper's `paper_method` is compared with."""
    wanted = OUR_METHODS.get(paper_method, (paper_method,))
    return [label for label in labels if method_of.get(label) in wanted]


def _inside(paper, low, high):
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    return "yes" if low <= paper <= high else "no"


def _row(cell, dataset, arch, forget, label, metric, stats, setting, note=""):
    """One comparison row: the paper's `cell` (a paper_values row) and our `stats` ({stat: value})."""
    paper = float(cell["value"])
    mean, low, high = (float(stats.get(s, np.nan)) for s in ("mean", "ci_low", "ci_high"))
    return {"Table": cell["table"], "Dataset": f"{dataset} / {DATASET_TITLES.get(cell['dataset'], cell['dataset'])}",
            "Arch": f"{arch} / {ARCH_TITLES.get(cell['arch'], cell['arch'])}", "Forget": forget, "Method": label,
            "Metric": metric, "Paper": cell["value"], "Paper ±": cell["std"],
            **{f"{OURS} {stat}": float(stats.get(stat, np.nan)) for stat in tables.STATS},
            "Difference": mean - paper, "Paper inside CI": _inside(paper, low, high), "Note": note,
            "Our setting": setting, "Paper's setting": cell["setting"]}


def our_neighbour(runs):
    """(c*, seeds whose runs used it, seeds with a c*, own) of one forget set's runs, or None without a
    logged c*. c*: the most common over seeds of the unlearn runs' neighbour_class (the c* their MIA-NN
    used; ties to the lowest class). own: (Retrain models whose own c* (tag own_neighbour_class) is
    that class, Retrain models with the tag), or None where no Retrain run carries the tag."""
    def per_seed(frame, column):
        if column not in frame:
            return pd.Series(dtype=float)
        values = pd.to_numeric(frame[column], errors="coerce")
        return values.groupby(frame["seed"].astype(str)).first().dropna().astype(int)
    logged = per_seed(runs[runs["stage"] == "unlearn"], "neighbour_class")
    if logged.empty:
        return None
    counts = logged.value_counts()
    neighbour = min(counts.index, key=lambda c: (-counts[c], c))
    own = per_seed(runs[runs["stage"] == "retrain"], "own_neighbour_class")
    return (int(neighbour), int(counts[neighbour]), len(logged),
            (int((own == neighbour).sum()), len(own)) if len(own) else None)


def _neighbour_row(cell, runs, dataset, arch, forget, setting, names):
    """Table 1's c* row: the paper's c* (cell['neighbour']) against ours; 'Paper inside CI' says whether they match."""
    found = our_neighbour(runs)
    paper = int(cell["neighbour"])
    row = _row({**cell, "value": cell["neighbour"], "std": ""}, dataset, arch, forget, "Retrain", NEIGHBOUR_TITLE,
               {}, setting)   # no numbers of ours: Ours and Difference NaN
    if found is None:
        row.update({"Paper inside CI": "n/a", "Note": f"our runs logged no c*; the paper's: {_class_text(paper, names)}"})
        return row
    neighbour, agreeing, seeds, own = found
    note = f"our c*: {_class_text(neighbour, names)} in {agreeing} of {seeds} seeds"
    if own is not None:
        note += f" (each Retrain model's own c*: that class in {own[0]} of {own[1]})"
    row.update({"Paper inside CI": f"match: {'yes' if neighbour == paper else 'no'}",
                "Note": note + f"; the paper's: {_class_text(paper, names)}"})
    return row


def _mia_nn_rows(group, cells, dataset, arch, uncertainty, method_order, class_names, train_sizes):
    """Table 1's rows for our (dataset, arch) runs `group`: per paper forget class we ran alone."""
    rows = []
    names = (class_names or {}).get(dataset)
    for forget, paper in cells.groupby("forget", sort=False):
        runs = group[group["forget_classes"].astype(str) == forget]
        if not (runs["stage"] == "unlearn").any():
            continue
        ours = tables.mia_nn_table(runs, None, method_order, uncertainty)
        if ours.empty:
            continue
        ours = ours[ours["Forget"] != tables.ALL_FORGET_SETS].set_index("Method")
        unlearn = runs[runs["stage"] == "unlearn"].reset_index(drop=True)
        # the paper's A_c* beside ours twice: as used (the reference, one value per forget set: its interval
        # has no width) and held out (each Retrain model against the others' reference: an interval over models)
        method_of = {**dict(zip(tables.method_labels(unlearn), unlearn["method"])), "Retrain": "retrain",
                     noise_floor.HELD_OUT_LABEL: "retrain"}
        setting = our_setting(runs, dataset, arch, class_names, train_sizes)
        forget_text = _class_text(forget, names)
        for cell in paper.to_dict("records"):
            for label in _labels_for(cell["method"], ours.index, method_of):
                stats = {stat: ours.loc[label, f"MIA-NN {stat}"] for stat in tables.STATS}
                if not stats["n"] > 0:
                    continue
                metric = {"Retrain": REFERENCE_TITLE, noise_floor.HELD_OUT_LABEL: HELD_OUT_TITLE}.get(
                    label, METRIC_TITLES[cell["metric"]])
                note = "the paper's single BU column" if cell["method"] == "bu" else ""
                rows.append(_row(cell, dataset, arch, forget_text, label, metric, stats, setting, note))
            if cell["method"] == "Retrain" and cell["neighbour"]:
                rows.append(_neighbour_row(cell, runs, dataset, arch, forget_text, setting, names))
    return rows


def _averaged_rows(group, cells, dataset, arch, uncertainty, method_order, class_names, train_sizes):
    """Tables 2, 4, 5's rows for our (dataset, arch) runs `group`: our accuracy table over every forget set we ran."""
    ours = tables.accuracy_table(group, method_order, uncertainty)
    method_of = dict(zip(tables.method_labels(group), group["method"]))
    setting = our_setting(group, dataset, arch, class_names, train_sizes)
    forgets = ", ".join(_sorted_text(group["forget_classes"]))
    forget_text = f"{forgets} (paper: {PAPER_FORGET_CLASSES[0]}–{PAPER_FORGET_CLASSES[-1]})"
    rows = []
    for paper_method, metrics in cells.groupby("method", sort=False):   # the paper's row order
        for label in _labels_for(paper_method, ours.index, method_of):    # e.g. bu_shrink's three, then bu_expand's
            for cell in metrics.to_dict("records"):
                title = tables.ACCURACY_METRICS[cell["metric"]]
                if f"{dataset}/{arch} {title} mean" not in ours:
                    continue
                stats = {stat: ours.loc[label, f"{dataset}/{arch} {title} {stat}"] for stat in tables.STATS}
                if not stats["n"] > 0:
                    continue
                note = "the paper's single BU column" if paper_method == "bu" else ""
                rows.append(_row(cell, dataset, arch, forget_text, label, title, stats, setting, note))
    return rows


def _compared_groups(runs, paper=None):
    """(dataset, arch, its single-class runs, the paper's cells it compares with) per our (dataset, arch)
    that has paper values, in the runs' order."""
    paper = load_paper_values() if paper is None else paper
    runs = single_class_runs(runs)
    for dataset, arch in dict.fromkeys(zip(runs["dataset"], runs["arch"])):
        theirs = PAPER_DATASETS.get(dataset)
        cells = paper[(paper["dataset"] == theirs) & (paper["arch"].map(paper_arch) == paper_arch(arch))]
        if theirs is not None and not cells.empty:
            yield dataset, arch, runs[(runs["dataset"] == dataset) & (runs["arch"] == arch)].reset_index(drop=True), cells


def comparison_table(runs, paper=None, uncertainty=None, method_order=None, class_names=None, train_sizes=None):
    """One row per paper cell our runs can be compared with (module docstring): Table, Dataset and Arch
    ('ours / the paper's'), Forget, Method (our label), Metric, Paper and Paper ± (as printed), Ours
    mean|std|ci_low|ci_high|n (our table's cell: mean over units, the spread of `uncertainty`, its
    bootstrap interval, n units), Difference (ours − paper), Paper inside CI ('yes' / 'no'; 'n/a'
    without our interval; c* rows: 'match: yes|no'), Note, Our setting, Paper's setting. Rows by our
    (dataset, arch) in the runs' order, Table 1 first, each in the paper's order. paper: paper_values
    (None: load_paper_values()); class_names: {dataset: [name per class]}; train_sizes: {dataset:
    training images} (our setting). An empty frame (with COLUMNS) when nothing compares."""
    uncertainty = uncertainty or Uncertainty()
    rows = []
    for dataset, arch, group, cells in _compared_groups(runs, paper):
        options = (uncertainty, method_order, class_names, train_sizes)
        rows += _mia_nn_rows(group, cells[cells["forget"] != AVERAGED], dataset, arch, *options)
        rows += _averaged_rows(group, cells[cells["forget"] == AVERAGED], dataset, arch, *options)
    return pd.DataFrame(rows, columns=COLUMNS)


def coverage(runs, paper=None, class_names=None):
    """Caption text: per our (dataset, arch) with paper values, the forget classes ours covers against the
    paper's (its averaged tables' 0–9, Table 1's one class), e.g. 'mnist5k/small_cnn against the paper's
    MNIST ResNet-18: our forget classes 3, 8 (Table 4 averages the paper's classes 0–9; ours, the classes
    it ran); Table 1's forget class 8: ours ran it'."""
    parts = []
    for dataset, arch, group, cells in _compared_groups(runs, paper):
        theirs = PAPER_DATASETS[dataset]
        names = (class_names or {}).get(dataset)
        ran = _sorted_text(group["forget_classes"])
        averaged = cells[cells["forget"] == AVERAGED]
        text = (f"{dataset}/{arch} against the paper's {DATASET_TITLES[theirs]} "
                f"{ARCH_TITLES[paper_arch(arch)]}: our forget classes {', '.join(_class_text(f, names) for f in ran)}")
        if len(averaged):
            text += (f" ({' and '.join(averaged['table'].unique())} averages the paper's classes "
                     f"{PAPER_FORGET_CLASSES[0]}–{PAPER_FORGET_CLASSES[-1]}; ours, the classes it ran)")
        for forget in cells.loc[cells["forget"] != AVERAGED, "forget"].unique():
            text += (f"; Table 1's forget class {_class_text(forget, names)}: "
                     f"{'ours ran it' if forget in ran else 'not among ours (no Table 1 rows)'}")
        parts.append(text)
    return "; ".join(parts)
