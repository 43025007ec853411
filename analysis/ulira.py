"""U-LiRA (class-level, after Hayes et al. 2024): can an attacker tell unlearned models from Retrain?

Semantics as docs/metrics.md states them ("U-LiRA"): 50 = the unlearned ("in") models are
indistinguishable from Retrain ("out") models on the forget samples, 100 = perfectly distinguishable.
Every choice the paper leaves open is a keyword argument whose value callers record next to the score.

Spread: accuracy and AUC are computed per held-out pair (in model i, out model j): mean, sample std
and n = K² over the pairs. A TPR at a low FPR needs more negatives than one pair has (a pair scores N
out samples, and a TPR at FPR f is shown only with >= 10/f negatives), so it is computed per held-out
IN model i, over its K pairs pooled: model i's samples as scored in each pair against the K·N
distinct out-model samples; mean, sample std and n = K over the in models. Every interval is a seeded
bootstrap over the K held-out in models (statistics.bootstrap_mean of each in model's mean over its
pairs): pairs share models, so the K² pairs are not K² independent units.
"""
import math
from typing import NamedTuple

import numpy as np

from analysis import statistics

VARIANCES = ("auto", "global", "per_sample")
# variance "auto": per-sample Gaussians once each fit (leave-one-out: K - 1 models) rests on >= 15
# models; below that a per-sample std from a handful of values is mostly noise and the pooled one wins
PER_SAMPLE_MIN_K = 16
FPRS = (0.01, 0.001)   # the LiRA papers' low-FPR operating points


FLOOR_LABEL = "Retrain (held-out)"   # the Retrain-against-Retrain attack's column (method 'retrain')


def resolve_variance(variance, k):
    """The variance an attack with K models per side uses: `variance` unless 'auto', which is
    'per_sample' at K >= PER_SAMPLE_MIN_K and 'global' (pooled) below."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {list(VARIANCES)}, got {variance!r}")
    if variance != "auto":
        return variance
    return "per_sample" if k >= PER_SAMPLE_MIN_K else "global"


def fpr_name(fpr):
    """0.01 -> '1pct', 0.001 -> '0.1pct': the FPR in a metric name (ulira_tpr_at_1pct)."""
    return f"{100.0 * fpr:g}pct"


def logit_scaled_confidence(logits, labels):
    """φ = log p_y − log(1 − p_y) per sample, float64, from (N, C) logits and (N,) true labels.

    Computed as z_y − logsumexp_{k≠y} z_k (the softmax normaliser cancels), so it stays finite for
    finite logits even where p_y rounds to 0 or 1 in float64. Needs C ≥ 2.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"need (N, C>=2) logits and (N,) labels, got {z.shape} and {labels.shape}")
    rows = np.arange(z.shape[0])
    others = z.copy()
    others[rows, labels] = -np.inf
    top = others.max(axis=1)
    lse_others = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    return z[rows, labels] - lse_others


class GaussianFit(NamedTuple):
    mean: np.ndarray  # (N,) per-sample mean of φ
    std: np.ndarray   # (N,) std used for each sample (constant across samples for variance="global")


def fit_gaussians(scores, variance="global", min_std=1e-3):
    """Per-sample Gaussians to φ over the rows (models) of `scores` (M, N).

    Mean: per-sample mean over the M models. Std (ddof=1 when M ≥ 2, else 0, i.e. only the floor):
    - "global" (default; LiRA's fixed-variance option, needed because the paper's K=3 leaves M=2
      models per fit): one pooled within-sample std, sqrt of the mean over samples of the
      per-sample variances. Unlike the LiRA reference code (np.std of all values) it excludes the
      spread between samples' means, which the per-sample means already model.
    - "per_sample": each sample's own std over its M values (very noisy for M=2).
    Either way floored at `min_std` (φ is in logit units) so a degenerate fit stays finite.
    """
    scores = np.asarray(scores, dtype=np.float64)
    m = scores.shape[0]
    mean = scores.mean(axis=0)
    var = scores.var(axis=0, ddof=1) if m >= 2 else np.zeros_like(mean)
    if variance == "global":
        std = np.full_like(mean, np.sqrt(var.mean()))
    elif variance == "per_sample":
        std = np.sqrt(var)
    else:
        raise ValueError(f"variance must be 'global' or 'per_sample', got {variance!r}")
    return GaussianFit(mean, np.maximum(std, min_std))


def log_likelihood_ratio(phi, fit_in, fit_out):
    """log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out), elementwise; > 0 means "looks like in"."""
    def log_pdf(fit):
        return -0.5 * ((phi - fit.mean) / fit.std) ** 2 - np.log(fit.std)  # log √(2π) cancels
    return log_pdf(fit_in) - log_pdf(fit_out)


class Spread(NamedTuple):
    mean: float      # over held-out pairs (accuracy, AUC) or held-out in models (TPR); NaN: not measurable
    std: float       # sample std (ddof = 1) over the same; NaN below two
    n: int           # pairs (K²) or in models (K) behind it (0: not measurable)
    ci_low: float    # seeded percentile bootstrap over the K held-out in models; NaN below 3
    ci_high: float


class ULiRAResult(NamedTuple):
    accuracy: float  # mean attack accuracy over held-out pairs, % (50 = indistinguishable)
    auc: float       # mean ROC AUC over held-out pairs, %
    pairs: tuple     # per held-out pair: (in_model, out_model, accuracy %, auc %); len = K·K
    spreads: dict = None     # statistic ('accuracy', 'auc', 'tpr_at_1pct', ...) -> Spread
    llr: np.ndarray = None   # (K, K, 2N) log likelihood ratios: [i, j] = in model i's N samples, then out j's
    variance: str = ""       # the variance the fits used ('global' or 'per_sample': 'auto' resolved)


def _spread(values, per_in_model, seed):
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    if not len(kept):
        return Spread(math.nan, math.nan, 0, math.nan, math.nan)
    interval = statistics.bootstrap_mean(per_in_model, seed=seed)
    return Spread(float(kept.mean()), statistics.sample_std(kept), len(kept), interval.low, interval.high)


def ulira(in_scores, out_scores, variance="global", min_std=1e-3, fprs=FPRS, seed=0):
    """Leave-one-out U-LiRA on φ of N forget samples: in_scores, out_scores both (K, N).

    in_scores[k]: φ under in model k (trained with the class, then unlearned by the method under
    test); out_scores[k]: φ under out model k (retrained without the class). For every pair (in
    model i, out model j) the Gaussians are fitted on the other K−1 in and K−1 out models only;
    both held-out models' 2N φ are scored by log_likelihood_ratio and predicted "in" when > 0
    (ties go to "out"). Accuracy = % correct over those 2N; AUC = roc_auc_score over the same 2N
    scores. Both are averaged over all K×K pairs. TPR at each FPR of `fprs`: per held-out in model
    (module docstring). variance: 'global', 'per_sample' or 'auto' (resolve_variance). seed: the
    bootstrap's. Needs K ≥ 2.
    """
    # scikit-learn costs ~1 s to import: paid by the attack, not by `validate` (grid/plan/config.py reads this
    # module's constants)
    from sklearn.metrics import roc_auc_score
    in_scores = np.asarray(in_scores, dtype=np.float64)
    out_scores = np.asarray(out_scores, dtype=np.float64)
    if in_scores.ndim != 2 or in_scores.shape != out_scores.shape:
        raise ValueError(f"in_scores and out_scores must both be (K, N), got {in_scores.shape} "
                         f"and {out_scores.shape}")
    k, n = in_scores.shape
    if k < 2:
        raise ValueError(f"U-LiRA needs K >= 2 in and out models for leave-one-out, got K={k}")
    variance = resolve_variance(variance, k)
    # The in fit depends only on the held-out in model i, the out fit only on j.
    fits_in = [fit_gaussians(np.delete(in_scores, i, axis=0), variance, min_std) for i in range(k)]
    fits_out = [fit_gaussians(np.delete(out_scores, j, axis=0), variance, min_std) for j in range(k)]
    truth = np.concatenate([np.ones(n), np.zeros(n)])
    pairs = []
    llr = np.empty((k, k, 2 * n))
    for i in range(k):
        for j in range(k):
            phi = np.concatenate([in_scores[i], out_scores[j]])
            fit_in = GaussianFit(np.tile(fits_in[i].mean, 2), np.tile(fits_in[i].std, 2))
            fit_out = GaussianFit(np.tile(fits_out[j].mean, 2), np.tile(fits_out[j].std, 2))
            llr[i, j] = log_likelihood_ratio(phi, fit_in, fit_out)
            acc = 100.0 * float(np.mean((llr[i, j] > 0) == truth))
            auc = 100.0 * float(roc_auc_score(truth, llr[i, j]))
            pairs.append((i, j, acc, auc))
    accs = np.array([p[2] for p in pairs])
    aucs = np.array([p[3] for p in pairs])
    spreads = {"accuracy": _spread(accs, accs.reshape(k, k).mean(axis=1), seed),
               "auc": _spread(aucs, aucs.reshape(k, k).mean(axis=1), seed)}
    for fpr in fprs:
        tprs = np.array([_in_model_tpr(llr[i], n, fpr) for i in range(k)])
        spreads[f"tpr_at_{fpr_name(fpr)}"] = _spread(tprs, tprs, seed)
    return ULiRAResult(float(accs.mean()), float(aucs.mean()), tuple(pairs), spreads, llr, variance)


def _in_model_tpr(rows, n, fpr):
    """TPR (%) at `fpr` of one held-out in model from its K pairs' scores `rows` (K, 2N), pooled: its
    N samples as scored in each pair (K·N positives) against every out model's N (K·N negatives, each
    (out model, sample) once). NaN with fewer than 10/fpr negatives (statistics.tpr_at_fpr)."""
    positives, negatives = rows[:, :n].ravel(), rows[:, n:].ravel()
    scores = np.concatenate([positives, negatives])
    truth = np.concatenate([np.ones(len(positives), dtype=bool), np.zeros(len(negatives), dtype=bool)])
    return statistics.tpr_at_fpr(scores, truth, fpr)[0]


def table_statistics(columns):
    """{statistic: row name} of the U-LiRA table for a runs frame's `columns`: accuracy and AUC, then a
    TPR row per FPR the runs were attacked at (ulira_tpr_at_<f>pct), highest FPR first."""
    rows = {"accuracy": "U-LiRA accuracy (%)", "auc": "U-LiRA AUC (%)"}
    found = {}
    for column in columns:
        if column.startswith("ulira_tpr_at_") and column.endswith("pct"):
            percent = column[len("ulira_tpr_at_"):-len("pct")]
            try:
                found[column[len("ulira_"):]] = float(percent)
            except ValueError:
                continue
    for statistic, percent in sorted(found.items(), key=lambda item: -item[1]):
        rows[statistic] = f"TPR at {percent:g}% FPR (%)"
    return rows


def note(runs):
    """The U-LiRA table's caption text from its attack runs (params `variance`, `bank_seeds` or
    `shadow_seeds`, tag `ulira_models`): K, where the models come from, the variance used, what the
    spread is over. Runs from before these fields: the pooled variance they always used."""
    def values(column):
        return sorted(set(runs[column].dropna().astype(str))) if column in runs else []
    attacks = runs[runs["method"] != "retrain"] if "method" in runs else runs
    ks = sorted({int(k) for k in (attacks["ulira_models"].dropna() if "ulira_models" in attacks else [])})
    variances = values("variance") or ["global"]
    variance = " and ".join({"global": "pooled ('global')", "per_sample": "per-sample"}.get(v, v) for v in variances)
    banked = bool(values("bank_seeds"))
    models = (f"K = {'/'.join(map(str, ks))} in and out models per forget set" if ks else "K in and out models")
    source = ("from a bank of their own seeds, shared by every method" if banked
              else "the unlearned Originals and Retrain models of the grid's first K seeds")
    text = (f"{models}, {source}; {variance} Gaussian variance (auto: per-sample from {PER_SAMPLE_MIN_K} "
            f"models per side); mean ± sample std over held-out (in, out) pairs, n = pairs (TPR: over held-out "
            f"in models, each pooling its K pairs, n = in models; shown only with ≥ 10/FPR negatives, else n/a); "
            f"interval: bootstrap over held-out in models (over attacks where a column has several)")
    if "method" in runs and (runs["method"] == "retrain").any():
        text += f"; {FLOOR_LABEL}: half the bank's Retrain models against the other half, the noise floor"
    return text
