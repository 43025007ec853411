"""The `paper_comparison` table item (analysis/paper_comparison.py): our numbers beside the paper's.

`items(runs, uncertainty)` returns [(name, title, table, show_index, units)] for write_tables, or []
when no dataset of the runs has paper values (or none of their cells compares). The table has text
columns (the paper's values as printed, yes/no, settings) beside our numeric 'Ours mean|std|ci_low|
ci_high|n' cell, which write_tables prints as 'mean ± std [low, high] (n=N)'.
"""
from analysis import paper_comparison, tables
from analysis.statistics import Uncertainty
from trainables import datasets


def title(runs, uncertainty, coverage, note=""):
    """The caption: what is compared, which forget classes ours covers, our interval, the paper's ±."""
    return ("Against the paper's numbers (its Tables 1, 2, 4, 5, transcribed in analysis/paper_values.csv): "
            "a row per published cell our runs can be compared with. Table 1 (MIA-NN): per forget class, only "
            "where ours forgot that class; the paper's Retrain cell is set beside our A_c* and, with >= 2 Retrain "
            "models, our leave-one-out A_c* (Retrain (held-out)); its c* row says whether our Retrain's c* "
            "(the most common over seeds) matches the paper's. Tables 2, 4, 5 (Acc_r, Acc_f, MIA): our mean over "
            f"the single-class forget sets we ran, which need not be the paper's. Coverage: {coverage}. "
            f"Ours: {tables.spread_note(runs, uncertainty=uncertainty)} (the same cells as the accuracy and "
            "mia_nn tables, over single-class forget sets). Paper ±: the paper's own spread, which it never "
            "defines (our reading: over forget classes, `--spread forget_classes`); empty where it prints "
            "none. Difference = ours − paper; Paper inside CI: whether the paper's printed value lies in our "
            "interval (n/a: no interval; an interval of no width, every unit alike, holds only that value). The paper's BU is set beside both bu_shrink and bu_expand. The "
            "setting columns (model, training images, forget classes, seeds) say how far a row is from the "
            "paper's setting: a row on another model or data set is a comparison, not a reproduction. "
            "Nothing is tuned or adjusted to agree." + note)


def items(runs, uncertainty=None, method_order=None, note=""):
    uncertainty = uncertainty or Uncertainty()
    if "dataset" not in runs or not paper_comparison.has_paper_values(runs["dataset"]):
        return []
    known = [d for d in runs["dataset"].astype(str).unique() if d in datasets.DATASETS]
    names = {d: list(datasets.DATASETS[d].class_names) for d in known}
    sizes = {d: datasets.DATASETS[d].train_size for d in known}
    table = paper_comparison.comparison_table(runs, uncertainty=uncertainty, method_order=method_order,
                                              class_names=names, train_sizes=sizes)
    if table.empty:
        return []
    single = paper_comparison.single_class_runs(runs)
    caption = title(single, uncertainty, paper_comparison.coverage(runs, class_names=names), note)
    return [("paper_comparison", caption, table, False, None)]
