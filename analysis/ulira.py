"""U-LiRA (class-level, after Hayes et al. 2024): can an attacker tell unlearned models from Retrain?

Semantics as docs/metrics.md states them ("U-LiRA"): 50 = the unlearned ("in") models are
indistinguishable from Retrain ("out") models on the forget samples, 100 = perfectly distinguishable.
Every choice the paper leaves open is a keyword argument whose value callers record next to the score.
"""
from typing import NamedTuple

import numpy as np
from sklearn.metrics import roc_auc_score


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


class ULiRAResult(NamedTuple):
    accuracy: float  # mean attack accuracy over held-out pairs, % (50 = indistinguishable)
    auc: float       # mean ROC AUC over held-out pairs, %
    pairs: tuple     # per held-out pair: (in_model, out_model, accuracy %, auc %); len = K·K


def ulira(in_scores, out_scores, variance="global", min_std=1e-3):
    """Leave-one-out U-LiRA on φ of N forget samples: in_scores, out_scores both (K, N).

    in_scores[k]: φ under in model k (trained with the class, then unlearned by the method under
    test); out_scores[k]: φ under out model k (retrained without the class). For every pair (in
    model i, out model j) the Gaussians are fitted on the other K−1 in and K−1 out models only;
    both held-out models' 2N φ are scored by log_likelihood_ratio and predicted "in" when > 0
    (ties go to "out"). Accuracy = % correct over those 2N; AUC = roc_auc_score over the same 2N
    scores. Both are averaged over all K×K pairs. Needs K ≥ 2.
    """
    in_scores = np.asarray(in_scores, dtype=np.float64)
    out_scores = np.asarray(out_scores, dtype=np.float64)
    if in_scores.ndim != 2 or in_scores.shape != out_scores.shape:
        raise ValueError(f"in_scores and out_scores must both be (K, N), got {in_scores.shape} "
                         f"and {out_scores.shape}")
    k, n = in_scores.shape
    if k < 2:
        raise ValueError(f"U-LiRA needs K >= 2 in and out models for leave-one-out, got K={k}")
    # The in fit depends only on the held-out in model i, the out fit only on j.
    fits_in = [fit_gaussians(np.delete(in_scores, i, axis=0), variance, min_std) for i in range(k)]
    fits_out = [fit_gaussians(np.delete(out_scores, j, axis=0), variance, min_std) for j in range(k)]
    truth = np.concatenate([np.ones(n), np.zeros(n)])
    pairs = []
    for i in range(k):
        for j in range(k):
            phi = np.concatenate([in_scores[i], out_scores[j]])
            fit_in = GaussianFit(np.tile(fits_in[i].mean, 2), np.tile(fits_in[i].std, 2))
            fit_out = GaussianFit(np.tile(fits_out[j].mean, 2), np.tile(fits_out[j].std, 2))
            llr = log_likelihood_ratio(phi, fit_in, fit_out)
            acc = 100.0 * float(np.mean((llr > 0) == truth))
            auc = 100.0 * float(roc_auc_score(truth, llr))
            pairs.append((i, j, acc, auc))
    accs = [p[2] for p in pairs]
    aucs = [p[3] for p in pairs]
    return ULiRAResult(float(np.mean(accs)), float(np.mean(aucs)), tuple(pairs))
