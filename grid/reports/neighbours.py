"""Neighbour-class agreement (issue 12): the inputs of analysis.neighbours.agreement_table from an
experiment's runs — Retrain's A_c of every retained class (the unlearn runs' `retrain_class_scores`
tag, logged by trainables/trial.py from the MIA-NN reference its trial read or computed on its worker,
trainables/references.py; for runs logged before that tag, refitted here, on the machine `tables` runs
on, from the Retrain models' test logits) and each registered similarity's scores of the
Originals (trainables/similarity.py)."""
import functools
import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from grid.tracking import mlflow_runs
from grid.reports.report import _test_logits, artifact, class_names
from trainables import data

TAG = "retrain_class_scores"   # the unlearn runs' tag: compact JSON {"c": A_c}, see trainables.trial.class_scores_tag


def _evaluation_of(run):
    """The evaluation settings an unlearn run reports with (its logged evaluation.* params), as
    trainables.references.compute reads them: split (absent = test), seed, class_weight."""
    def value(name, default):
        found = run.get(f"evaluation.{name}")
        return found if isinstance(found, str) and found else default
    evaluation = {"seed": int(value("seed", "0")), "class_weight": value("class_weight", "balanced")}
    if value("split", "test") != "test":
        evaluation["split"] = value("split", "test")
    return evaluation


def finished_original_run_ids():
    """{key: run_id} of every finished stage=original run in any experiment (originals are shared between
    grids), the first finished run of a key as grid/mlflow_runs.finished_runs counts it: ONE query for all
    the Originals of a table, on the tracking URI the runs were read from."""
    frame = mlflow_runs.finished_runs(mlflow.get_tracking_uri(), "original")
    if not len(frame) or "tags.key" not in frame:
        return {}
    keyed = frame[frame["tags.key"].notna()].sort_values(["end_time", "run_id"]).drop_duplicates("tags.key")
    return dict(zip(keyed["tags.key"], keyed["run_id"]))


def _original_state(key, runs, original_run_ids=finished_original_run_ids):
    """The Original's weights by key: the model.pt artifact of its finished stage=original run (in any
    experiment: originals are shared between grids), else of this experiment's Original row (an
    unlearn run of method 'original' evaluates the original itself and logs its weights).
    original_run_ids: a callable giving finished_original_run_ids() (a table passes a cached one, so
    its Originals cost one query together, not one each)."""
    import torch
    run_id = original_run_ids().get(key)
    if run_id is None:
        rows = runs[(runs["method"] == "original") & (runs["original_key"] == key)] if "original_key" in runs else runs.iloc[0:0]
        if not len(rows):
            raise LookupError(f"no finished run of the Original {key} to read its weights from")
        run_id = rows["run_id"].iloc[0]
    return artifact(run_id, "model.pt", lambda path: torch.load(path, map_location="cpu", weights_only=True))


def _similarity_context(dataset, arch, key, runs, data_root, echo, original_run_ids=finished_original_run_ids):
    """A SimilarityContext of the Original `key`: its final-layer weight, and the model with the
    dataset's training images (normalised batch by batch) for the scores that read data; weight only
    when the dataset cannot be loaded here. original_run_ids: see _original_state."""
    import torch
    from trainables import models, similarity
    info = data.DATASETS[dataset]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = models.build(arch, info.num_classes, info.input_shape)
    model.load_state_dict(_original_state(key, runs, original_run_ids))
    model.to(device).eval()
    weight = models.final_layer(model).weight
    try:
        loaded = data.load(dataset, data_root)
    except Exception as error:   # no copy of the dataset here: the weight-only scores still work
        echo(f"neighbour_agreement: {dataset} not loadable from {data_root or data.DEFAULT_DATA_ROOT} "
             f"({type(error).__name__}: {error}); similarities that read training data are left out")
        return similarity.SimilarityContext(weight=weight, num_classes=info.num_classes)
    return similarity.SimilarityContext(weight=weight, model=model, x=loaded.train_x, y=loaded.train_y,
                                        num_classes=info.num_classes, device=device, prepare=loaded.model_input)


def _trw_rank(runs):
    """The PCA rank the TRW runs used when they all used one (their params.rank), else None (the
    default, C − 1): the rank changes weight_pca_cosine's ordering; the temperature does not."""
    if "params.rank" not in runs:
        return None
    ranks = set()
    for value in runs.loc[runs["method"].isin(["trw", "trw_2r"]), "params.rank"].dropna().astype(str):
        try:
            ranks.add(int(float(value)))
        except ValueError:     # 'None': the default
            ranks.add(None)
    return ranks.pop() if len(ranks) == 1 else None


PARALLEL_FITS = 50   # more SVM fits than this for one forget set: spread them over the CPUs


def class_scores(logits, labels, forget_classes, class_weight):
    """{c: A_c} of every retained class from the Retrain models' (N, C) test logits, exactly as
    analysis.attacks.nearest_neighbour_class computes them (the mean over the models of
    class_logit_attack), its SVM fits spread over the CPUs when there are many: one fit per
    (retained class, model), seconds each on 10 000 test samples (CIFAR-100: 99 x R per forget set)."""
    from joblib import Parallel, delayed
    from analysis.attacks import class_logit_attack
    retained = [c for c in range(np.asarray(logits[0]).shape[1]) if c not in forget_classes]
    fits = [(c, z) for c in retained for z in logits]
    jobs = min(len(fits), os.cpu_count() or 1) if len(fits) > PARALLEL_FITS else 1
    values = Parallel(n_jobs=jobs)(delayed(class_logit_attack)(z, labels, forget_classes, c, class_weight)
                                   for c, z in fits)
    per_class = {}
    for (c, _), value in zip(fits, values):
        per_class.setdefault(c, []).append(value)
    return {c: float(np.mean(v)) for c, v in per_class.items()}


def _cached(cache, key, compute):
    """compute() once per key in the JSON file `cache` (a dict of {class: A_c}); None: no cache."""
    if cache is None:
        return compute()
    path = Path(cache)
    stored = json.loads(path.read_text()) if path.exists() else {}
    if key not in stored:
        stored[key] = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=1, sort_keys=True))
    return {int(c): float(a) for c, a in stored[key].items()}


def logged_class_scores(group):
    """{c: A_c} from the first `retrain_class_scores` tag of the unlearn runs `group`; None when none
    of them has it (runs logged before the tag existed)."""
    if TAG not in group:
        return None
    logged = [v for v in group[TAG] if isinstance(v, str) and v.strip()]
    if not logged:
        return None
    return {int(c): float(a) for c, a in json.loads(logged[0]).items()}


def neighbour_agreement_cells(runs, data_root=None, echo=print, cache=None):
    """The inputs of analysis.neighbours.agreement_table, per (dataset, arch, forget set) of the unlearn
    runs: A_c of every retained class as the trials got it for MIA-NN's reference (the runs'
    `retrain_class_scores` tag), or, for runs logged before that tag, refitted from the Retrain models'
    test logits (their test_logits.npz artifacts, on the run's evaluation split and class weight, as
    trainables.references.compute computes c*; kept in the JSON file `cache` by Retrain run ids and
    evaluation settings, as the SVMs take minutes on the real datasets), and each registered similarity's score of every Original
    the cell's runs used (one row per Original; a forget set of several classes: the mean of their
    rows; the data-driven scores run the Original over the training set, on a GPU when there is
    one). A cell whose models cannot be read is left out with a line on `echo`; a similarity that
    cannot be computed (e.g. needs training data that is not here) gets None."""
    from trainables import similarity
    from trainables.evaluate import svm_class_weight
    unlearn = runs[runs["stage"] == "unlearn"]
    retrain = runs[runs["stage"] == "retrain"]
    can_refit = "retrain_keys" in unlearn and "key" in retrain
    if not len(unlearn) or not (can_refit or TAG in unlearn):
        return []
    rank, contexts, cells = _trw_rank(runs), {}, []
    # the finished Originals are looked up once for the whole table, when the first one is read
    original_run_ids = functools.cache(finished_original_run_ids)
    for (dataset, arch, forget), group in unlearn.groupby(["dataset", "arch", "forget_classes"], sort=False):
        forget_classes = [int(c) for c in str(forget).split(",")]
        first = group.iloc[0]
        evaluation = _evaluation_of(first)
        try:
            scores_of_classes = logged_class_scores(group)
            if scores_of_classes is None:   # runs logged before the tag: refit A_c from the Retrain logits
                if not can_refit:
                    raise LookupError(f"no {TAG} tag and no Retrain runs to refit A_c from")
                keys = str(first["retrain_keys"]).split(",")
                missing = [key for key in keys if not (retrain["key"] == key).any()]
                if missing:
                    raise LookupError(f"no finished Retrain run of {', '.join(missing)}")
                run_ids = [retrain.loc[retrain["key"] == key, "run_id"].iloc[0] for key in keys]

                def compute():
                    logits = [_test_logits(run_id) for run_id in run_ids]
                    labels = logits[0][1]
                    reported = data.evaluation_indices(labels, evaluation)
                    return class_scores([z[reported] for z, _ in logits], labels[reported], forget_classes,
                                        svm_class_weight(evaluation))
                scores_of_classes = _cached(cache, f"{dataset}/{arch}/{forget}|{','.join(run_ids)}|"
                                                   f"{json.dumps(evaluation, sort_keys=True)}", compute)
            neighbour = min(scores_of_classes, key=lambda c: (-scores_of_classes[c], c))
            logged = pd.to_numeric(group["neighbour_class"], errors="coerce").dropna() \
                if "neighbour_class" in group else pd.Series([], dtype=float)
            if len(logged) and int(logged.iloc[0]) != neighbour:
                echo(f"neighbour_agreement: {dataset}/{arch} forget {forget}: c* = {neighbour} here, "
                     f"{int(logged.iloc[0])} in the runs")
            scores = {name: [] for name in similarity.SIMILARITIES}
            for key in sorted(group["original_key"].dropna().unique()):
                if key not in contexts:
                    contexts[key] = _similarity_context(dataset, arch, key, runs, data_root, echo, original_run_ids)
                for name in similarity.SIMILARITIES:
                    try:
                        matrix = similarity.score_matrix(name, contexts[key], forget_classes, rank)
                    except ValueError as error:   # e.g. no training data here for a data-driven score
                        echo(f"neighbour_agreement: {name} not computed for {dataset}/{arch} forget {forget}: {error}")
                        continue
                    scores[name].append(matrix[forget_classes].double().mean(dim=0).numpy())
        except Exception as error:   # a report goes on without the models it cannot read
            echo(f"neighbour_agreement: {dataset}/{arch} forget {forget} left out ({type(error).__name__}: {error})")
            continue
        cells.append({"dataset": dataset, "arch": arch, "forget": forget, "class_scores": scores_of_classes,
                      "scores": {name: np.stack(rows) if rows else None for name, rows in scores.items()}})
    return cells


def neighbour_agreement_table(runs, data_root=None, echo=print, cache=None):
    """analysis.neighbours.agreement_table of the runs (an empty frame when no cell could be built)."""
    from analysis import neighbours
    from trainables import similarity
    cells = neighbour_agreement_cells(runs, data_root, echo, cache)
    return neighbours.agreement_table(cells, list(similarity.SIMILARITIES), class_names(runs))
