"""Uncertainty for the tables: seeded bootstrap intervals, paired tests, Holm's correction, TPR at a
fixed FPR, the Jensen–Shannon divergence, and the bit strings that carry per-sample attack predictions.

An experimental unit is one (training seed, forget set, unlearning seed): one model, evaluated once.
A table cell's value is the mean over its units; its interval is a percentile bootstrap over those
units. For the attack scores (SVM MIA, MIA-NN: each a percentage of test samples an attack labels one
way) a draw also resamples the test samples inside every drawn unit: a unit with k of m samples
labelled has its resampled score drawn as Binomial(m, k / m) / m, which is exactly what resampling m
0/1 predictions with replacement gives, without handling the samples one by one (drawn by inverting the
binomial's CDF). Resampling at both
levels is the usual two-stage bootstrap; it errs on the wide side (the sample noise is counted in the
spread between units as well), never the narrow one.

Every function is seeded (`seed`) so a table is the same at every call; `cell_seed` derives a cell's
seed from the table's seed and the cell's names, so adding a row does not move the other rows' draws.
Below MIN_UNITS units an interval is NaN (printed 'n/a'): two values do not make a distribution.
"""
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

MIN_UNITS = 3            # fewer units: no interval (n/a)
RESAMPLES = 1000         # bootstrap draws per cell (the caption says how many)
LEVEL = 0.95             # two-sided interval
SPREADS = ("seeds", "forget_classes", "units")   # what a table's ± spans (Uncertainty.spread)
EXACT_WILCOXON_MAX = 50  # exact null distribution up to this many non-zero differences without ties (as scipy's 'auto')


@dataclass(frozen=True)
class Uncertainty:
    """How `unlearn-grid tables` reports uncertainty (its --spread, --resamples, --ci-seed, --compare-to).

    spread: what the ± (sample std) spans: 'seeds' (the std of per-seed means: each seed averaged over
    its forget sets first), 'forget_classes' (the std of per-forget-set means, each averaged over its
    seeds: our reading of the paper's ±, whose Table 2 Original has Acc_f ± 5.45 against Acc_r ± 0.09)
    or 'units' (every (seed, forget set, unlearning seed) its own value).
    baselines: the methods the comparisons table pairs every method with."""
    spread: str = "seeds"
    resamples: int = RESAMPLES
    seed: int = 0
    level: float = LEVEL
    baselines: tuple = ("trw", "retrain")

    def problems(self, methods=None):
        """[(field, message)] for bad options; `methods`: the names a baseline may take (None: any)."""
        out = []
        if self.spread not in SPREADS:
            out.append(("spread", f"must be one of {list(SPREADS)}, got {self.spread!r}"))
        if not isinstance(self.resamples, int) or isinstance(self.resamples, bool) or self.resamples < 100:
            out.append(("resamples", f"must be a whole number >= 100, got {self.resamples!r}"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            out.append(("ci_seed", f"must be a whole number >= 0, got {self.seed!r}"))
        if not (isinstance(self.level, float) and 0.5 <= self.level < 1):
            out.append(("level", f"must be a number in [0.5, 1), got {self.level!r}"))
        allowed = sorted({*methods, "retrain"}) if methods is not None else None
        for baseline in self.baselines:
            if allowed is not None and baseline not in allowed:
                out.append(("compare_to", f"unknown baseline {baseline!r}; allowed: {allowed}"))
        return out

    def check(self, methods=None):
        """Raise ValueError naming every bad field (before anything is written)."""
        problems = self.problems(methods)
        if problems:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))
        return self


def cell_seed(seed, *names):
    """A cell's own seed from the table's `seed` and the cell's names (stable across processes)."""
    text = "|".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class Interval(NamedTuple):
    estimate: float   # the mean over units (NaN without units)
    low: float        # percentile interval; NaN below MIN_UNITS units
    high: float
    n: int            # units behind it


def bootstrap_mean(values, counts=None, resamples=RESAMPLES, seed=0, level=LEVEL, min_units=MIN_UNITS):
    """Interval of the mean of per-unit `values` (NaNs dropped with their counts).

    counts: None, or per unit (labelled, samples): the unit's value is 100·labelled/samples (an attack
    score) and every draw resamples its samples too (module docstring). Units without samples
    (samples 0 or NaN) keep their value in every draw."""
    return bootstrap_means([(values, counts, seed)], resamples, level, min_units)[0]


def bootstrap_means(cells, resamples=RESAMPLES, level=LEVEL, min_units=MIN_UNITS):
    """bootstrap_mean of many cells at once, each (values, counts, seed): the same Interval each, with the
    percentiles of all cells taken in one call (a table of thousands of cells spends most of its time
    there otherwise)."""
    out, pending = [], []
    for values, counts, seed in cells:
        values = np.asarray(values, dtype=np.float64)
        keep = ~np.isnan(values)
        values = values[keep]
        n = len(values)
        if n == 0:
            out.append(Interval(math.nan, math.nan, math.nan, 0))
            continue
        estimate = float(values.mean())
        out.append(Interval(estimate, math.nan, math.nan, n))
        if n < min_units:
            continue
        pending.append((len(out) - 1, _draw_means(values, counts, keep, resamples, seed)))
    if pending:
        tail = 100.0 * (1.0 - level) / 2.0
        bounds = np.percentile(np.stack([means for _, means in pending]), [tail, 100.0 - tail], axis=1)
        for (position, _), low, high in zip(pending, bounds[0], bounds[1]):
            out[position] = out[position]._replace(low=float(low), high=float(high))
    return out


def _draw_means(values, counts, keep, resamples, seed):
    """The `resamples` bootstrap means of one cell (its NaN-free `values`; `keep`: which of the given
    units they are, to drop the same units' counts)."""
    n = len(values)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n))
    if counts is None:
        return values[drawn].mean(axis=1)
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 2)[keep]
    uniforms = rng.random((resamples, n))
    resampled = np.empty((resamples, n))
    for unit, (labelled, samples) in enumerate(counts):
        if not samples > 0:   # no samples stored (NaN or 0): the unit keeps its value in every draw
            resampled[:, unit] = values[unit]
            continue
        samples = int(samples)
        # its samples resampled: Binomial(samples, labelled / samples) by inverting its CDF (exact, and
        # ~10x faster than Generator.binomial, which a table of 20,000 cells would wait on)
        cdf = _binomial_cdf(samples, int(round(labelled)))
        resampled[:, unit] = 100.0 * np.minimum(np.searchsorted(cdf, uniforms[:, unit], side="right"), samples) / samples
    return np.take_along_axis(resampled, drawn, axis=1).mean(axis=1)


@functools.lru_cache(maxsize=4096)
def _binomial_cdf(samples, labelled):
    """CDF of Binomial(samples, labelled / samples) at 0..samples (the last entry exactly 1)."""
    k = np.arange(samples + 1)
    p = labelled / samples
    if p in (0.0, 1.0):
        pmf = (k == labelled).astype(np.float64)
    else:
        log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, samples + 1)))])
        pmf = np.exp(log_factorial[samples] - log_factorial[k] - log_factorial[samples - k]
                     + k * math.log(p) + (samples - k) * math.log1p(-p))
    cdf = np.cumsum(pmf)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def columns(prefix, interval, std):
    """An Interval as the tables' numeric columns '<prefix> mean|std|ci_low|ci_high|n' (std: its ±)."""
    return {f"{prefix} mean": interval.estimate, f"{prefix} std": std, f"{prefix} ci_low": interval.low,
            f"{prefix} ci_high": interval.high, f"{prefix} n": interval.n}


def sample_std(values):
    """Sample std (ddof = 1) of the non-NaN values; NaN below two."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def wilcoxon_signed_rank(differences):
    """Two-sided p-value of the Wilcoxon signed-rank test of paired `differences` (NaNs dropped).

    Zero differences are dropped (Wilcoxon's own rule, scipy's zero_method='wilcox'); ties get mid
    ranks. With no ties and at most EXACT_WILCOXON_MAX differences the p-value is exact (the null
    distribution of the positive rank sum, by counting: scipy.stats.wilcoxon's default gives the same);
    otherwise the normal approximation with the tie correction and no continuity correction
    (scipy.stats.wilcoxon's method='approx'; with ties, scipy's default 'auto' differs from it).
    NaN with no non-zero difference."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return math.nan
    ranks = _mid_ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    ties = len(np.unique(np.abs(d))) < n
    if n <= EXACT_WILCOXON_MAX and not ties:
        # ways[s] = subsets of {1..n} with rank sum s: the null distribution of R+ (each sign ±1 alike)
        ways = np.zeros(n * (n + 1) // 2 + 1)
        ways[0] = 1.0
        for rank in range(1, n + 1):
            ways[rank:] = ways[rank:] + ways[:-rank].copy()
        ways /= ways.sum()
        statistic = int(round(min(r_plus, n * (n + 1) / 2 - r_plus)))
        return float(min(1.0, 2.0 * ways[:statistic + 1].sum()))
    mean = n * (n + 1) / 4.0
    _, tie_counts = np.unique(np.abs(d), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24.0 - (tie_counts ** 3 - tie_counts).sum() / 48.0
    if variance <= 0:
        return 1.0
    z = (r_plus - mean) / math.sqrt(variance)
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def _mid_ranks(values):
    """Ranks 1..n of `values`, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    return ranks


def paired_permutation(differences, resamples=10_000, seed=0):
    """Two-sided p-value of the paired sign-flip permutation test of mean(differences) = 0 (NaNs dropped):
    every sign pattern when there are at most 16 pairs (exact), else `resamples` random ones (+1 smoothed)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)
        flipped = np.abs((signs * d[None, :]).mean(axis=1))
        return float(np.mean(flipped >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, n))
    flipped = np.abs((signs * d[None, :]).mean(axis=1))
    return float((1 + np.sum(flipped >= observed - 1e-12)) / (resamples + 1))


def holm(p_values):
    """Holm–Bonferroni adjusted p-values (same order; NaNs stay NaN and do not count as tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    running = 0.0
    for step, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - step) * p[index]))
        out[index] = running
    return out


def tpr_at_fpr(scores, truth, fpr, min_negatives_factor=10):
    """(TPR in %, negatives) at false-positive rate `fpr`: the largest TPR over thresholds whose FPR is
    <= fpr, predicting positive for score >= threshold (the ROC's step). TPR is NaN when there are fewer
    than min_negatives_factor / fpr negatives (a rate of 0.1% needs 10,000): too few to measure it."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    negatives, positives = int((~truth).sum()), int(truth.sum())
    if negatives < min_negatives_factor / fpr or positives == 0:
        return math.nan, negatives
    thresholds = np.unique(scores)[::-1]          # high to low: every distinct score is a threshold
    neg_sorted = np.sort(scores[~truth])
    pos_sorted = np.sort(scores[truth])
    # how many of each side score >= t, for every threshold t
    false_pos = negatives - np.searchsorted(neg_sorted, thresholds, side="left")
    true_pos = positives - np.searchsorted(pos_sorted, thresholds, side="left")
    allowed = false_pos / negatives <= fpr
    best = true_pos[allowed].max() if allowed.any() else 0
    return 100.0 * float(best) / positives, negatives


def jensen_shannon(p, q):
    """Jensen–Shannon divergence in bits (0 = same distribution, 1 = disjoint) of two distributions
    (each normalised to sum 1 first)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a):
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))
    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def pack_bits(bits):
    """0/1 predictions as compact text 'N:hex' (N samples, bits packed 8 to a byte), for a run's tag."""
    bits = np.asarray(bits).astype(bool).ravel()
    return f"{len(bits)}:{np.packbits(bits).tobytes().hex()}"


def unpack_bits(text):
    """pack_bits' text back to a bool array; None for a missing tag (NaN or empty)."""
    if not isinstance(text, str) or ":" not in text:
        return None
    count, payload = text.split(":", 1)
    return np.unpackbits(np.frombuffer(bytes.fromhex(payload), dtype=np.uint8))[:int(count)].astype(bool)
