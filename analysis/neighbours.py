"""Neighbour-class agreement: is a similarity score's top class where Retrain sends the forget class?

TRW's tilt bets that argmax_k s_k, the top class of its similarity score (trainables/similarity.py),
is c* = argmax_c A_c, the class Retrain models send the forget class to (MIA-NN's nearest neighbour,
analysis/attacks.py). `agreement_table` lays that bet out per (dataset, arch, forget set), from
numbers only (pure numpy/pandas: grid/reports/neighbours.py gathers A_c, logged by the unlearn runs, and
the scores from the stored Originals).
"""
import numpy as np
import pandas as pd

from analysis import statistics
from analysis.tables import forget_set_name


def ranking(scores, classes):
    """`classes` ordered by `scores` (indexed by class), highest first; ties: the lower class index
    first (as nearest_neighbour_class picks c*); NaN scores last."""
    scores = np.asarray(scores, dtype=float)
    return sorted((int(c) for c in classes),
                  key=lambda c: (np.isnan(scores[c]), -scores[c] if not np.isnan(scores[c]) else 0.0, c))


def _name(cls, names):
    return names[int(cls)] if names else str(int(cls))


def _similarity_columns(name, scores, retained, neighbour, names):
    """The '<name> top', '<name> rank of c*', '<name> agrees' cells of one row, and (agreeing, originals).

    scores: (C,) or (n_originals, C), one score vector per Original (TRW with seed s tilts by Original
    s's scores), or None / all NaN when the similarity could not be computed. Top class and rank of c*
    are those of the mean score over the Originals; 'agrees' counts the Originals whose own top class is c*."""
    scores = None if scores is None else np.atleast_2d(np.asarray(scores, dtype=float))
    if scores is None or np.isnan(scores[:, retained]).all():
        return {f"{name} top": "–", f"{name} rank of c*": "–", f"{name} agrees": "–"}, (0, 0)
    usable = scores[~np.isnan(scores[:, retained]).all(axis=1)]
    order = ranking(usable.mean(axis=0), retained)
    agreeing = sum(ranking(row, retained)[0] == neighbour for row in usable)
    return ({f"{name} top": _name(order[0], names), f"{name} rank of c*": order.index(neighbour) + 1,
             f"{name} agrees": f"{agreeing}/{len(usable)}"}, (agreeing, len(usable)))


def _rate_interval(agreeing, total, name, seed, digits):
    """'[low, high] ': the 95% bootstrap interval of an agreement rate over its (forget set, Original)
    units (analysis.statistics, seeded per similarity); '' below 3 units."""
    outcomes = 100.0 * (np.arange(total) < agreeing)
    interval = statistics.bootstrap_mean(outcomes, seed=statistics.cell_seed(seed, "neighbour_agreement", name))
    return "" if np.isnan(interval.low) else f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}] "


def agreement_table(cells, similarities, class_names=None, digits=1, seed=0):
    """One row per cell, then an 'agreement rate' row.

    cells: dicts with dataset, arch, forget (the forget_classes text, '8' or '1,2'), class_scores
    {c: A_c} for every retained class (%), and scores {similarity: (C,) or (n_originals, C) array, or
    None when it could not be computed}; similarities: the similarity names, in column order;
    class_names: {dataset: [name per class]} (indices without).

    Columns: Dataset, Forget, c* (argmax A_c, ties to the lower index), A_c*, 'A_c ranking' (every
    retained class, highest A_c first, with its A_c), and per similarity '<s> top' (top class of its
    score, averaged over the Originals), '<s> rank of c*' (1 = c* is its top class), '<s> agrees'
    ('k/n': the Originals whose top class is c*); '–' where a similarity could not be computed. The
    last row gives per similarity the agreement rate over every (forget set, Original), with its 95%
    bootstrap interval over those units (seed `seed`; none below 3), and the mean rank of c* over the
    forget sets."""
    rows, totals = [], {name: [0, 0, []] for name in similarities}
    for cell in cells:
        names = (class_names or {}).get(cell["dataset"])
        class_scores = {int(c): float(a) for c, a in cell["class_scores"].items()}
        retained = sorted(class_scores)
        by_score = sorted(retained, key=lambda c: (-class_scores[c], c))
        neighbour = by_score[0]
        row = {"Dataset": f"{cell['dataset']}/{cell['arch']}", "Forget": forget_set_name(cell["forget"], names),
               "c*": _name(neighbour, names), "A_c*": class_scores[neighbour],
               "A_c ranking": " > ".join(f"{_name(c, names)} ({class_scores[c]:.{digits}f})" for c in by_score)}
        for name in similarities:
            columns, (agreeing, originals) = _similarity_columns(name, cell["scores"].get(name), retained,
                                                                 neighbour, names)
            row.update(columns)
            totals[name][0] += agreeing
            totals[name][1] += originals
            if originals:
                totals[name][2].append(columns[f"{name} rank of c*"])
        rows.append(row)
    summary = {"Dataset": "agreement rate", "Forget": "", "c*": "", "A_c*": np.nan, "A_c ranking": ""}
    for name, (agreeing, originals, ranks) in totals.items():
        summary[f"{name} top"] = ""
        summary[f"{name} rank of c*"] = f"mean {np.mean(ranks):.{digits}f}" if ranks else "–"   # over forget sets
        summary[f"{name} agrees"] = (f"{100.0 * agreeing / originals:.{digits}f}% "
                                     f"{_rate_interval(agreeing, originals, name, seed, digits)}({agreeing}/{originals})"
                                     if originals else "–")
    if rows:
        rows.append(summary)
    return pd.DataFrame(rows)
