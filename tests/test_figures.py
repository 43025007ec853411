"""Each figure function writes a non-empty PNG of the documented pixel size; the bar charts draw their
intervals as error bars (the λ curve as a band), Figure 7 is a heatmap with Retrain first and each row's
Jensen–Shannon divergence to Retrain beside it."""
import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.image import AxesImage

from analysis import figures, statistics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the figure functions save, in order (to look at their artists)."""
    saved = []
    save = figures._save

    def keep(figure, path):
        saved.append(figure)
        return save(figure, path)
    monkeypatch.setattr(figures, "_save", keep)
    return saved


def error_bar_lengths(ax, horizontal=False):
    """The lengths of the error bars a bar chart drew (one per bar that has one)."""
    [bars] = [c for c in ax.containers if isinstance(c, BarContainer)]
    lines = bars.errorbar.lines[2][0] if bars.errorbar is not None else None
    if lines is None:
        return []
    return [abs((seg[1][0] - seg[0][0]) if horizontal else (seg[1][1] - seg[0][1])) for seg in lines.get_segments()]


def assert_png(path, width_in, height_in):
    """A PNG at `path` of round(inches * DPI) pixels each way."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (round(width_in * figures.DPI), round(height_in * figures.DPI))


@pytest.mark.parametrize("num_classes,names", [(3, None), (3, ["cat", "dog", "car"]), (30, None)])
def test_confusion_matrices(tmp_path, num_classes, names):
    rng = np.random.default_rng(0)
    matrices = {title: rng.integers(0, 20, (num_classes, num_classes)) for title in ["Original", "TRW", "Retrain"]}
    matrices["TRW"][1] = 0    # an empty row (e.g. a class with no test samples) must not break it
    path = figures.confusion_matrices(matrices, tmp_path / "sub" / "confusion.png", class_names=names)
    assert path == tmp_path / "sub" / "confusion.png"
    assert_png(path, figures.PANEL * 3 + figures.COLORBAR, figures.PANEL)


def test_row_normalise():
    np.testing.assert_allclose(figures.row_normalise([[1, 3], [0, 0]]), [[25.0, 75.0], [0.0, 0.0]])


@pytest.mark.parametrize("num_classes,names", [(5, ["a", "b", "c", "d", "e"]), (40, None)])
def test_redistribution_heatmap(tmp_path, drawn, num_classes, names):
    rng = np.random.default_rng(1)
    shares = {title: 100 * rng.dirichlet(np.ones(num_classes)) for title in ["Original", "TRW", "Retrain"]}
    divergences = {"Original": 0.25, "TRW": float("nan"), "Retrain": 0.0}
    path = figures.redistribution_heatmap(shares, tmp_path / "redistribution.png", class_names=names,
                                          forget_classes=(2,), divergences=divergences)
    assert_png(path, *figures.HEATMAP_FIGSIZE)
    heatmap, right = drawn[0].axes[0], drawn[0].axes[1]
    [image] = [a for a in heatmap.get_children() if isinstance(a, AxesImage)]
    columns = min(num_classes, figures.ANNOTATE_MAX_CLASSES)
    assert image.get_array().shape == (3, columns)
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["Retrain", "Original", "TRW"]   # Retrain first
    if num_classes <= figures.ANNOTATE_MAX_CLASSES:                       # every class shown, in class order
        np.testing.assert_allclose(image.get_array()[0], shares["Retrain"])
    assert [t.get_text() for t in right.get_yticklabels()] == ["ref.", "0.250", "n/a"]


def test_mia_nn_bars(tmp_path, drawn):
    values = {"FT": 55.0, "RL": 30.5, "TRW": 70.0, "TRW-2R": 68.2}
    intervals = {"FT": (50.0, 61.0), "RL": (float("nan"), float("nan")), "TRW": (66.0, 72.0)}   # TRW-2R: none
    path = figures.mia_nn_bars(values, 71.0, tmp_path / "mia_nn.png", title="digits / class 8", intervals=intervals)
    assert_png(path, *figures.SMALL_FIGSIZE)
    assert error_bar_lengths(drawn[0].axes[0]) == pytest.approx([11.0, 0.0, 6.0, 0.0])
    path = figures.mia_nn_bars(values, float("nan"), tmp_path / "mia_nn_noref.png")
    assert_png(path, *figures.SMALL_FIGSIZE)


@pytest.mark.parametrize("with_reference", [True, False])
def test_lambda_curve(tmp_path, drawn, with_reference):
    frame = pd.DataFrame({"lam": [0, 0, 0, 5, 5, 5, 10, 10, 10, 20],
                          "acc_r": [94.3, 94.4, 94.0, 94.4, 94.3, 94.1, 94.3, 94.2, 94.0, 77.7],
                          "mia_nn": [47.0, 47.4, 46.0, 76.0, 76.2, 75.0, 82.0, 82.2, 81.0, 98.5]})
    if with_reference:
        frame["mia_nn_reference"] = 80.0
    path = figures.lambda_curve(frame, tmp_path / "lambda.png", resamples=200)
    assert_png(path, *figures.LAMBDA_FIGSIZE)
    for ax in drawn[0].axes:
        [band] = [c for c in ax.collections if isinstance(c, PolyCollection)]
        low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
        assert low < high                      # λ 0, 5, 10 have 3 rows each: an interval; λ 20 has one: none


def test_running_time_bars(tmp_path, drawn):
    seconds = {"Retrain": (250.0, 240.0, 262.0), "FT": (60.0, 58.0, 61.0), "TRW": (25.0, float("nan"), float("nan")),
               "TRW-2R": 18.25}
    path = figures.running_time_bars(seconds, tmp_path / "time.png")
    assert_png(path, *figures.SMALL_FIGSIZE)
    assert error_bar_lengths(drawn[0].axes[0], horizontal=True) == pytest.approx([22.0, 3.0, 0.0, 0.0])


def test_error_bars_from_intervals():
    errors = figures._error_bars([10.0, 5.0, 3.0], [(8.0, 13.0), (float("nan"), float("nan")), None])
    np.testing.assert_allclose(errors, [[2.0, 0.0, 0.0], [3.0, 0.0, 0.0]])


@pytest.mark.parametrize("meshgrid", [False, True])
def test_decision_regions(tmp_path, meshgrid):
    xs, ys = np.linspace(-3, 3, 40), np.linspace(-2, 2, 30)
    gx, gy = np.meshgrid(xs, ys)
    original = (gx > 0).astype(int) + (gy > 1).astype(int) * 2 % 3
    retrain = np.where(gx > 0, 1, 0)
    rng = np.random.default_rng(2)
    points = (rng.normal(size=(50, 2)), rng.integers(0, 3, 50))
    grid = (gx, gy) if meshgrid else (xs, ys)
    path = figures.decision_regions(*grid, {"Original": original, "Retrain": retrain, "TRW": retrain},
                                    tmp_path / "regions.png", points=points)
    assert_png(path, figures.PANEL * 3, figures.PANEL)
    path = figures.decision_regions(xs, ys, {"Original": original}, tmp_path / "regions1.png")
    assert_png(path, figures.PANEL, figures.PANEL)


# ---------------------------------------------------------------- write_figures on a hand-built experiment

def experiment(with_mean_probs):
    """digits/small_cnn, forget class 8, 3 seeds: Retrain, the Original row, trw and ft; trw at two λ."""
    rows = []
    for seed in range(3):
        common = {"dataset": "digits", "arch": "small_cnn", "forget_classes": "8", "seed": str(seed),
                  "unlearn_seed": "0", "wall_seconds": 10.0 + seed, "evaluation.split": "test", "evaluation.seed": "0"}
        rows.append({**common, "stage": "retrain", "method": "retrain", "run_id": f"retrain{seed}", "acc_r_test": 95.0})
        rows.append({**common, "stage": "unlearn", "method": "original", "run_id": f"original{seed}", "mia_nn": 90.0,
                     "mia_nn_reference": 60.0, "acc_r_test": 96.0})
        for method, lam in (("trw", "10.0"), ("trw", "0.0"), ("ft", np.nan)):
            rows.append({**common, "stage": "unlearn", "method": method, "params.lam": lam,
                         "run_id": f"{method}{lam}{seed}", "mia_nn": 55.0 + seed, "mia_nn_reference": 60.0,
                         "acc_r_test": 94.0 + seed,
                         "mia_nn_predictions": statistics.pack_bits([1, 0, 1, 1, 0]),
                         "forget_mean_probs": json.dumps([0.1] * 8 + [0.0, 0.2]) if with_mean_probs else np.nan})
    return pd.DataFrame(rows)


def test_write_figures_draws_intervals_and_the_heatmap(tmp_path, monkeypatch, drawn):
    """Runs without the forget_mean_probs tag (runs from before it): the JS divergences come from the logits."""
    from grid.reports import report
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6)

    def logits(run_id):      # Retrain puts every forget sample on class 3, the others spread them
        z = rng.normal(size=(len(labels), 10))
        if run_id.startswith("retrain"):
            z[labels == 8, 3] += 20.0
        return z, labels
    monkeypatch.setattr(report, "_test_logits", logits)
    written = report.write_figures(experiment(with_mean_probs=False), tmp_path,
                                   uncertainty=statistics.Uncertainty(resamples=200))
    names = sorted(p.name for p in written)
    assert "redistribution_digits_small_cnn_f8.png" in names and "mia_nn_digits_small_cnn_f8.png" in names
    assert "running_time.png" in names and "lambda_trw.png" in names
    assert all((tmp_path / n).is_file() for n in names)
    heatmap = drawn[[p.name for p in written].index("redistribution_digits_small_cnn_f8.png")]
    rows = [t.get_text() for t in heatmap.axes[0].get_yticklabels()]
    assert rows[0] == "Retrain" and "Original" in rows
    divergence = dict(zip(rows, [t.get_text() for t in heatmap.axes[1].get_yticklabels()]))
    assert divergence["Retrain"] == "ref." and all(float(divergence[r]) > 0.1 for r in rows[1:])
    mia = drawn[[p.name for p in written].index("mia_nn_digits_small_cnn_f8.png")]
    assert any(length > 0 for length in error_bar_lengths(mia.axes[0]))      # 3 units per method: intervals
    timing = drawn[[p.name for p in written].index("running_time.png")]
    assert any(length > 0 for length in error_bar_lengths(timing.axes[0], horizontal=True))


def test_forget_mean_probs_prefers_the_tag():
    from grid.reports import report
    z = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    y = np.array([0, 2, 2])
    computed = report.forget_mean_probs(pd.Series({"evaluation.split": "test"}), z, y, [2])
    np.testing.assert_allclose(computed, [0.15, 0.5, 0.35])
    tagged = report.forget_mean_probs(pd.Series({"forget_mean_probs": "[0.5, 0.5, 0.0]"}), z, y, [2])
    np.testing.assert_allclose(tagged, [0.5, 0.5, 0.0])
