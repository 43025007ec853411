"""The paper's figures as PNG files (matplotlib, Agg canvas; no pyplot state, no display needed).

Every function draws on a fresh Figure of a fixed size at DPI dots per inch, writes a PNG to `path`
(parent folders created) and returns it as a pathlib.Path. No tight bounding box, so the pixel size is
exactly figure inches x DPI (see each docstring). Figure 2 (toy decision regions), 5 (running time),
6 (confusion matrices), 7 (where forget-class predictions go), Table 7's λ sweep and MIA-NN bars.

Uncertainty (issue 28): every bar chart takes 95% intervals (analysis.statistics.bootstrap_mean over
units, computed by the caller) and draws them as error bars; the λ curve computes its own per-λ
intervals over the frame's rows and draws them as a band. A NaN interval (fewer than MIN_UNITS units)
draws no bar. Figure 7 is a heatmap (methods x predicted class, Retrain first) with each method's
Jensen–Shannon divergence to Retrain beside its row.
"""
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from analysis import statistics

DPI = 100
PANEL = 4.0            # inches per square panel (confusion matrices, decision regions)
COLORBAR = 1.0         # extra inches for the shared colour bar of the confusion matrices
SMALL_FIGSIZE = (6.0, 4.0)
LAMBDA_FIGSIZE = (10.0, 4.0)
HEATMAP_FIGSIZE = (9.0, 5.0)
ANNOTATE_MAX_CLASSES = 12
TICK_MAX_CLASSES = 20


def _figure(figsize, layout="constrained"):
    """A Figure on an Agg canvas; layout 'compressed' for panels of fixed aspect (images)."""
    figure = Figure(figsize=figsize, dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"savefig.bbox": "standard"}):
        figure.savefig(path, format="png", dpi=DPI)
    return path


def _names(num_classes, class_names):
    return [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]


def _class_colours(num_classes):
    """A discrete colour map of `num_classes` colours (tab10, tab20, else sampled from turbo)."""
    if num_classes <= 20:
        return ListedColormap(matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"].colors[:num_classes])
    return ListedColormap(matplotlib.colormaps["turbo"](np.linspace(0.0, 1.0, num_classes)))


def row_normalise(matrix):
    """Rows of a count matrix as percentages of their row sum (rows summing to 0 stay 0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(100.0 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_matrices(matrices, path, class_names=None):
    """Figure 6: one panel per {title: (C, C) count matrix} side by side (e.g. Original / TRW / Retrain),
    rows (true class) normalised to %, cells annotated when C <= 12, one shared colour bar.
    Size: (PANEL * panels + COLORBAR) x PANEL inches, i.e. (400 * panels + 100) x 400 pixels."""
    figure = _figure((PANEL * len(matrices) + COLORBAR, PANEL), layout="compressed")
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (title, matrix) in zip(axes, matrices.items()):
        percent = row_normalise(matrix)
        size = percent.shape[0]
        image = ax.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0)
        ax.set_title(title)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        if size <= TICK_MAX_CLASSES:
            names = _names(size, class_names)
            ax.set_xticks(range(size), names, rotation=90 if class_names is not None else 0)
            ax.set_yticks(range(size), names)
        if size <= ANNOTATE_MAX_CLASSES:
            for (t, p), value in np.ndenumerate(percent):
                ax.text(p, t, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 50 else "black")
    if image is not None:
        figure.colorbar(image, ax=list(axes), label="% of true class", shrink=0.8)
    return _save(figure, path)


def _error_bars(estimates, intervals):
    """matplotlib's (2, n) asymmetric errors from (low, high) per bar; 0 (no bar) where the interval or
    the estimate is NaN (fewer than MIN_UNITS units), or when `intervals` is None."""
    estimates = np.asarray(estimates, dtype=np.float64)
    if intervals is None:
        return np.zeros((2, len(estimates)))
    bounds = np.array([[np.nan, np.nan] if b is None else b for b in intervals], dtype=np.float64).reshape(-1, 2)
    errors = np.vstack([estimates - bounds[:, 0], bounds[:, 1] - estimates])
    return np.nan_to_num(np.clip(errors, 0.0, None), nan=0.0)


def redistribution_heatmap(shares, path, class_names=None, forget_classes=(), divergences=None, top=ANNOTATE_MAX_CLASSES):
    """Figure 7 as a heatmap: a row per {model title: (C,) share in %} of where the forget-class test
    samples are predicted (Retrain first, then the given order), a column per predicted class. Shows the
    `top` classes with the largest share in any model (all when top is None or C <= top), in class
    order; forget classes are marked '*'; cells annotated with their % when at most ANNOTATE_MAX_CLASSES
    columns. divergences: optional {title: Jensen–Shannon divergence (bits) of the model's mean predicted
    distribution on forget samples to Retrain's}, written at the right of each row ('n/a' for NaN,
    'ref.' for Retrain). Size: HEATMAP_FIGSIZE (9 x 5 inches, 900 x 500 pixels)."""
    titles = sorted(shares, key=lambda t: t != "Retrain")          # stable: Retrain first, the rest in order
    table = np.vstack([np.asarray(shares[t], dtype=np.float64) for t in titles])
    num_classes = table.shape[1]
    classes = np.arange(num_classes)
    if top is not None and num_classes > top:
        peak = np.nan_to_num(table, nan=0.0).max(axis=0)
        classes = np.sort(np.argsort(-peak, kind="stable")[:top])
    forget = set(np.atleast_1d(forget_classes).astype(int).tolist())
    names = _names(num_classes, class_names)
    labels = [names[c] + ("*" if c in forget else "") for c in classes]
    shown = table[:, classes]
    figure = _figure(HEATMAP_FIGSIZE)
    ax = figure.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=100.0, aspect="auto")
    ax.set_xticks(range(len(classes)), labels, rotation=0 if class_names is None else 45,
                  ha="center" if class_names is None else "right")
    ax.set_yticks(range(len(titles)), titles, fontsize="small")
    if len(classes) <= ANNOTATE_MAX_CLASSES:
        for (row, column), value in np.ndenumerate(shown):
            if np.isfinite(value):
                ax.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 50 else "black")
    ax.set_xlabel("Predicted class" + (" (* = forget class)" if forget else ""))
    if divergences is not None:
        # a twin axis: its tick labels sit beside each row, on the right
        right = ax.twinx()
        right.set_ylim(ax.get_ylim())
        right.set_yticks(range(len(titles)), [_divergence_text(t, divergences.get(t)) for t in titles],
                         fontsize="small")
        right.set_ylabel("JS divergence to Retrain (bits)")
    figure.colorbar(image, ax=ax, label="% of forget-class samples", pad=0.02)
    return _save(figure, path)


def _divergence_text(title, value):
    if title == "Retrain":
        return "ref."
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def mia_nn_bars(values, reference, path, title="", intervals=None):
    """MIA-NN per method as bars, in the given order, with error bars from intervals ({method: (low,
    high)}, e.g. 95% bootstrap intervals over units; missing or NaN: no bar) and the Retrain reference
    A_c* as a dashed horizontal line (skipped when NaN). Size: SMALL_FIGSIZE (6 x 4 inches, 600 x 400 pixels)."""
    figure = _figure(SMALL_FIGSIZE)
    ax = figure.subplots()
    heights = [float(v) for v in values.values()]
    errors = _error_bars(heights, None if intervals is None else [intervals.get(k) for k in values])
    bars = ax.bar(range(len(values)), heights, yerr=errors, capsize=3, color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", fontsize=8, label_type="center", color="white")
    if reference is not None and not np.isnan(reference):
        ax.axhline(reference, color="tab:red", linestyle="--", label=f"Retrain A_c* = {reference:.1f}")
        ax.legend(loc="best")
    ax.set_xticks(range(len(values)), list(values), rotation=45, ha="right")
    ax.set_ylabel("MIA-NN (%)" + (" (95% CI)" if intervals is not None else ""))
    tops = [h + e for h, e in zip(heights, errors[1]) if np.isfinite(h)]
    ax.set_ylim(0, max([100.0] + tops) * 1.05)
    ax.set_title(title)
    return _save(figure, path)


def _intervals_by_lam(frame, column, resamples, seed, level):
    """λ values, means and interval bounds of `column` over the rows sharing each λ (bootstrap_mean)."""
    lams, means, lows, highs = [], [], [], []
    for lam, group in frame.groupby("lam", sort=True):
        interval = statistics.bootstrap_mean(group[column].to_numpy(dtype=np.float64), None, resamples,
                                             statistics.cell_seed(seed, "lambda", column, lam), level)
        lams.append(float(lam))
        means.append(interval.estimate)
        lows.append(interval.low)
        highs.append(interval.high)
    return np.array(lams), np.array(means), np.array(lows), np.array(highs)


def lambda_curve(frame, path, resamples=statistics.RESAMPLES, seed=0, level=statistics.LEVEL):
    """Table 7 as a figure: two panels, Acc_r and MIA-NN against λ: the mean over rows sharing a λ (its
    units: seeds, forget sets, unlearning seeds) and a shaded 95% bootstrap interval (`resamples` draws,
    seeded from `seed`; none where a λ has fewer than MIN_UNITS rows). frame columns: lam, acc_r, mia_nn;
    optional mia_nn_reference (and acc_r_reference), drawn as a dashed 'Retrain' line at its mean.
    Size: LAMBDA_FIGSIZE (10 x 4 inches, 1000 x 400 pixels)."""
    frame = frame.assign(lam=frame["lam"].astype(float))
    figure = _figure(LAMBDA_FIGSIZE)
    axes = figure.subplots(1, 2)
    for ax, (column, label) in zip(axes, [("acc_r", "Acc_r (%)"), ("mia_nn", "MIA-NN (%)")]):
        lam, mean, low, high = _intervals_by_lam(frame, column, resamples, seed, level)
        ax.plot(lam, mean, marker="o", label="λ sweep")
        if np.isfinite(low).any():
            ax.fill_between(lam, low, high, alpha=0.25, label=f"{round(100 * level)}% CI")
        reference = f"{column}_reference"
        if reference in frame and frame[reference].notna().any():
            ax.axhline(float(frame[reference].mean()), color="tab:red", linestyle="--", label="Retrain")
        ax.legend(fontsize="small")
        ax.set_xticks(lam)
        ax.set_xlabel("λ")
        ax.set_ylabel(label)
    return _save(figure, path)


def running_time_bars(seconds, path):
    """Figure 5: horizontal bars of running time per {method: (mean, low, high) seconds} with the
    interval (e.g. a 95% bootstrap interval over its trials; NaN: no bar) as an error bar (a bare number
    = mean with no error bar), first method on top, each bar labelled with its mean.
    Size: SMALL_FIGSIZE (6 x 4 inches, 600 x 400 pixels)."""
    triples = [tuple(v) if np.ndim(v) else (v, np.nan, np.nan) for v in seconds.values()]
    means = np.array([float(m) for m, _, _ in triples])
    errors = _error_bars(means, [(low, high) for _, low, high in triples])
    figure = _figure(SMALL_FIGSIZE)
    ax = figure.subplots()
    bars = ax.barh(range(len(means)), means, xerr=errors, capsize=3, color="tab:blue")
    ax.bar_label(bars, labels=[f"{m:.2f}s" for m in means], padding=4, fontsize=8)
    ax.set_yticks(range(len(means)), list(seconds))
    ax.invert_yaxis()
    ax.set_xlabel("Running time (s), 95% CI")
    ax.margins(x=0.15)
    return _save(figure, path)


def decision_regions(grid_x, grid_y, predictions, path, points=None, class_names=None):
    """Figure 2: one panel per {title: (H, W) predicted class on the grid} for 2-D toy models, classes
    coloured consistently across panels. grid_x, grid_y: 1-D (W,) and (H,) coordinates or 2-D (H, W)
    meshgrids. points: optional (x (N, 2), y (N,)) samples scattered on every panel. class_names:
    optional names for a legend on the first panel.
    Size: PANEL * panels x PANEL inches, i.e. (400 * panels) x 400 pixels."""
    arrays = [np.asarray(p, dtype=np.int64) for p in predictions.values()]
    labels = [] if points is None else [np.asarray(points[1], dtype=np.int64)]
    num_classes = int(max(a.max() for a in arrays + labels if a.size)) + 1
    cmap = _class_colours(num_classes)
    norm = BoundaryNorm(np.arange(num_classes + 1) - 0.5, num_classes)
    figure = _figure((PANEL * len(predictions), PANEL), layout="compressed")
    axes = figure.subplots(1, len(predictions), squeeze=False)[0]
    for ax, title, regions in zip(axes, predictions, arrays):
        ax.pcolormesh(grid_x, grid_y, regions, cmap=cmap, norm=norm, alpha=0.35, shading="auto")
        if points is not None:
            ax.scatter(np.asarray(points[0])[:, 0], np.asarray(points[0])[:, 1], c=labels[0], cmap=cmap,
                       norm=norm, s=12, edgecolors="black", linewidths=0.3)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="box")
    if class_names is not None:
        handles = [Patch(color=cmap(k), label=str(name)) for k, name in enumerate(class_names)]
        axes[0].legend(handles=handles, loc="upper right", fontsize="small")
    return _save(figure, path)


def _search_values(values, space):
    """A param's trial values for the x axis: numbers for numeric spaces, text for a `choice` space
    (categorical axis; MLflow hands every param back as a string)."""
    if str(space).startswith("choice"):
        return values.astype(str).to_numpy()
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def search_objective(trials, spaces, path, title=""):
    """A hyperparameter search: the objective (y, lower is better) of every trial against each searched
    param (one panel per {param: space} in `spaces`, x on a log scale when the space is log-uniform).
    trials columns: objective, one column per param, booleans default, best, stopped_early, and an
    optional `series` label (e.g. the forget set; one colour each). Trials stopped early are hollow,
    the default point is boxed, the best point is a star. Size: PANEL per panel x PANEL inches."""
    trials = trials.reset_index(drop=True)
    series = trials["series"].astype(str) if "series" in trials else np.full(len(trials), "trials")
    names = list(dict.fromkeys(series))
    colours = _class_colours(len(names))
    figure = _figure((PANEL * len(spaces), PANEL))
    axes = figure.subplots(1, len(spaces), squeeze=False)[0]
    objective = np.asarray(trials["objective"], dtype=np.float64)
    for ax, (param, space) in zip(axes, spaces.items()):
        x = _search_values(trials[param], space)
        for k, name in enumerate(names):
            mine = np.asarray(series == name)
            for stopped in (False, True):
                chosen = mine & (np.asarray(trials["stopped_early"], dtype=bool) == stopped)
                if chosen.any():
                    # hollow = stopped early by ASHA: its objective is from an earlier epoch
                    ax.scatter(x[chosen], objective[chosen], s=30, linewidths=1.2, edgecolors=colours(k),
                               facecolors="none" if stopped else colours(k),
                               label=None if stopped or len(names) == 1 else name)
        default = np.asarray(trials["default"], dtype=bool)
        best = np.asarray(trials["best"], dtype=bool)
        ax.scatter(x[default], objective[default], marker="s", s=140, facecolors="none", edgecolors="black",
                   linewidths=1.5, label="default params")
        ax.scatter(x[best], objective[best], marker="*", s=220, color="gold", edgecolors="black",
                   linewidths=0.8, label="best", zorder=3)
        if str(space).startswith("log"):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())   # labelled minor ticks overlap within a decade
        ax.set_xlabel(f"{param}  ({space})")
        ax.set_ylabel("objective")
    if np.asarray(trials["stopped_early"], dtype=bool).any():
        axes[0].scatter([], [], s=30, facecolors="none", edgecolors="grey", label="stopped early")
    axes[0].legend(loc="best", fontsize="small")
    # wrapped: one 4-inch panel holds about 45 characters of a medium-size title
    figure.suptitle(textwrap.fill(title, width=45 * len(spaces)), fontsize="medium")
    return _save(figure, path)
