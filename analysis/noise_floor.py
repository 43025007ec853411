"""The Retrain noise floor: how far an independent Retrain model is from the Retrain reference.

MIA-NN's reference for a forget set is built from R Retrain models (one per training seed): A_c is the
mean over the models of the attack's score for retained class c, c* = argmax_c A_c (ties: the lowest
class) and A_c* = A_{c*}. A method is judged by its MIA-NN gap |MIA-NN − A_c*|. Two things are missing
from that: what gap a model that *is* a Retrain shows (the floor no method can beat), and an unbiased
A_c*: c* is the argmax of the same means that A_c* then reports, so A_c* is the maximum of R-model means
and sits above the score a fresh Retrain model gets on that class (the winner's curse of the argmax).

Both come from leave-one-out over the Retrain models. For model j, the reference of the OTHER models:
c*_{-j} = argmax_c of their mean A_c, A^{-j} = that mean. Model j is then scored like any method:
its held-out MIA-NN is its own A^j_{c*_{-j}} (the attack MIA-NN runs, on class c*_{-j}, already computed
when the reference was) and its held-out gap is |A^j_{c*_{-j}} − A^{-j}|. The gaps over j are the
`Retrain (held-out)` row: what "indistinguishable from Retrain" looks like. The unbiased A_c* is the mean
over j of A^j_{c*_{-j}}: the class chosen on the others, scored on the held-out model.

Input: the unlearn runs' `retrain_model_scores` tag, JSON {"seeds": [training seed per Retrain model],
"classes": [retained classes, ascending], "scores": [[A_c per class] per model]}; every unlearn run of a
forget set carries the same one. Runs logged before that tag: every table here is empty.
"""
import json

import numpy as np
import pandas as pd

from analysis import statistics
from analysis.tables import forget_set_name

TAG = "retrain_model_scores"
HELD_OUT_LABEL = "Retrain (held-out)"   # the row label beside the methods (MIA-NN table, comparisons)
TIE_DECIMALS = 9   # means rounded before the argmax, so classes tied in the 3-decimal scores stay tied (lowest wins)
UNIT_COLUMNS = ["dataset", "arch", "forget_classes", "seed"]


def key_text(values):
    """Seeds as text that matches across sources (a run's '0', a tag's 0, a float column's 0.0 -> '0');
    missing -> ''. Everything else: its str."""
    values = pd.Series(values)
    numbers = pd.to_numeric(values, errors="coerce")
    text = values.astype(str)
    integral = numbers.notna() & (numbers == numbers.round())
    text[integral] = numbers[integral].astype("int64").astype(str)
    text[values.isna()] = ""
    return text


def model_scores(runs):
    """{(dataset, arch, forget_classes): (seeds, classes, scores (models × classes))} from the first
    `retrain_model_scores` tag of each forget set's unlearn runs; forget sets without it are left out."""
    if TAG not in runs or "stage" not in runs:
        return {}
    tagged = runs[(runs["stage"] == "unlearn") & runs[TAG].map(lambda v: isinstance(v, str) and v != "")]
    first = tagged.assign(forget_classes=tagged["forget_classes"].astype(str)).groupby(
        ["dataset", "arch", "forget_classes"], sort=False)[TAG].first()
    out = {}
    for key, text in first.items():
        payload = json.loads(text)
        classes = np.asarray(payload["classes"], dtype=np.int64)
        scores = np.asarray(payload["scores"], dtype=np.float64).reshape(len(payload["seeds"]), len(classes))
        ascending = np.argsort(classes, kind="stable")   # so the first maximum is the lowest class
        out[key] = ([str(s) for s in key_text(payload["seeds"])], classes[ascending], scores[:, ascending])
    return out


def _argmax(means):
    """Index of the largest mean per row (ties: the first, i.e. the lowest class)."""
    return np.argmax(np.round(means, TIE_DECIMALS), axis=-1)


def held_out_units(runs):
    """One row per (forget set, Retrain model) for forget sets with >= 2 Retrain models: dataset, arch,
    forget_classes, seed (the model's training seed), loo_neighbour_class (c*_{-j}), loo_reference
    (A^{-j}), held_out_mia_nn (A^j_{c*_{-j}}), held_out_gap (|A^j_{c*_{-j}} − A^{-j}|),
    own_neighbour_class (the model's own argmax_c A^j_c) and own_score (that A^j_c)."""
    rows = []
    for (dataset, arch, forget), (seeds, classes, scores) in model_scores(runs).items():
        models = len(seeds)
        if models < 2:
            continue
        # row j: the mean A_c of every model but j
        others = np.stack([np.delete(scores, j, axis=0).mean(axis=0) for j in range(models)])
        loo = _argmax(others)
        own = _argmax(scores)
        index = np.arange(models)
        held_out = scores[index, loo]
        reference = others[index, loo]
        rows += [{"dataset": dataset, "arch": arch, "forget_classes": forget, "seed": seeds[j],
                  "loo_neighbour_class": int(classes[loo[j]]), "loo_reference": float(reference[j]),
                  "held_out_mia_nn": float(held_out[j]), "held_out_gap": float(abs(held_out[j] - reference[j])),
                  "own_neighbour_class": int(classes[own[j]]), "own_score": float(scores[j, own[j]])}
                 for j in range(models)]
    columns = [*UNIT_COLUMNS, "loo_neighbour_class", "loo_reference", "held_out_mia_nn", "held_out_gap",
               "own_neighbour_class", "own_score"]
    return pd.DataFrame(rows, columns=columns)


def held_out_rows(runs):
    """The `Retrain (held-out)` row's units for the MIA-NN table and the comparisons: a plain frame with
    dataset, arch, forget_classes, seed, mia_nn (A^j_{c*_{-j}}) and mia_nn_gap (|A^j_{c*_{-j}} − A^{-j}|),
    one row per (forget set, Retrain model); empty without the tag."""
    units = held_out_units(runs)
    return units[UNIT_COLUMNS].assign(mia_nn=units["held_out_mia_nn"], mia_nn_gap=units["held_out_gap"])


def _interval_columns(prefix, values, uncertainty, *names):
    """'<prefix> mean|std|ci_low|ci_high|n' of `values` (the tables' numeric convention)."""
    interval = statistics.bootstrap_mean(values, resamples=uncertainty.resamples, level=uncertainty.level,
                                         seed=statistics.cell_seed(uncertainty.seed, "noise_floor", *names, prefix))
    return statistics.columns(prefix, interval, statistics.sample_std(values))


LOO_REFERENCE = "A_c* (leave-one-out)"
HELD_OUT_GAP = "Retrain (held-out) gap"


def noise_floor_table(runs, uncertainty=None, class_names=None):
    """Per forget set with >= 2 Retrain models: Dataset, Forget, c* (the reference's), A_c* (as used:
    the runs' mia_nn_reference, the mean over all models at c*), A_c* (leave-one-out) (mean over models
    j of A^j_{c*_{-j}}, with its interval over the models), c* stability ('k/R': k of the R Retrain models
    have c* as their own argmax) and the Retrain (held-out) MIA-NN gap (mean, interval, n = models).
    After each (dataset, arch)'s forget sets, a row 'all' over them: A_c* (as used) averaged over forget
    sets, the other two pooled over every (forget set, model) unit, stability summed. Empty frame
    without the tag. class_names: {dataset: [name per class index]}."""
    uncertainty = uncertainty or statistics.Uncertainty()
    units = held_out_units(runs)
    if units.empty:
        return pd.DataFrame()
    scores = model_scores(runs)
    unlearn = runs[runs["stage"] == "unlearn"]
    first = unlearn.assign(forget_classes=unlearn["forget_classes"].astype(str)).groupby(
        ["dataset", "arch", "forget_classes"], sort=False)
    used_reference = first["mia_nn_reference"].first() if "mia_nn_reference" in unlearn else pd.Series(dtype=float)
    used_neighbour = first["neighbour_class"].first() if "neighbour_class" in unlearn else pd.Series(dtype=float)
    rows = []
    for (dataset, arch), cell in units.groupby(["dataset", "arch"], sort=False):
        names = (class_names or {}).get(dataset)
        used_all, stable_all, models_all = [], 0, 0
        for forget, group in cell.groupby("forget_classes", sort=False):
            key = (dataset, arch, forget)
            _, classes, model_matrix = scores[key]
            means = model_matrix.mean(axis=0)
            neighbour = pd.to_numeric(pd.Series([used_neighbour.get(key)]), errors="coerce").iloc[0]
            if np.isnan(neighbour):   # runs without the neighbour_class param: the tag's own argmax
                neighbour = int(classes[_argmax(means)])
            reference = pd.to_numeric(pd.Series([used_reference.get(key)]), errors="coerce").iloc[0]
            if np.isnan(reference):
                reference = float(means[np.searchsorted(classes, int(neighbour))])
            stable = int((group["own_neighbour_class"] == int(neighbour)).sum())
            used_all.append(reference)
            stable_all += stable
            models_all += len(group)
            rows.append({"Dataset": f"{dataset}/{arch}", "Forget": forget_set_name(forget, names),
                         "c*": forget_set_name(int(neighbour), names), "A_c* (as used)": reference,
                         **_interval_columns(LOO_REFERENCE, group["held_out_mia_nn"], uncertainty,
                                             dataset, arch, forget),
                         "c* stability": f"{stable}/{len(group)}",
                         **_interval_columns(HELD_OUT_GAP, group["held_out_gap"], uncertainty, dataset, arch, forget)})
        rows.append({"Dataset": f"{dataset}/{arch}", "Forget": "all", "c*": "",
                     "A_c* (as used)": float(np.mean(used_all)),
                     **_interval_columns(LOO_REFERENCE, cell["held_out_mia_nn"], uncertainty, dataset, arch, "all"),
                     "c* stability": f"{stable_all}/{models_all}",
                     **_interval_columns(HELD_OUT_GAP, cell["held_out_gap"], uncertainty, dataset, arch, "all")})
    return pd.DataFrame(rows)


def noise_floor_units(runs):
    """The per-unit frame behind noise_floor_table (NAME.units.csv): one row per (forget set, Retrain
    model) and metric, in the design's columns (label 'Retrain (held-out)', no unlearning seed)."""
    units = held_out_units(runs)
    long = units.melt(id_vars=UNIT_COLUMNS, value_vars=["held_out_mia_nn", "held_out_gap"],
                      var_name="metric", value_name="value")
    return long.assign(label=HELD_OUT_LABEL, unlearn_seed="", samples=np.nan)[
        ["dataset", "arch", "label", "seed", "forget_classes", "unlearn_seed", "metric", "value", "samples"]]
