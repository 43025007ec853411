"""Each figure function writes a non-empty PNG of the documented pixel size."""
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from analysis import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
def test_redistribution_bars(tmp_path, num_classes, names):
    rng = np.random.default_rng(1)
    shares = {title: 100 * rng.dirichlet(np.ones(num_classes)) for title in ["Original", "TRW", "Retrain"]}
    path = figures.redistribution_bars(shares, tmp_path / "redistribution.png", class_names=names,
                                       forget_classes=(2,))
    assert_png(path, *figures.BAR_FIGSIZE)


def test_mia_nn_bars(tmp_path):
    values = {"FT": 55.0, "RL": 30.5, "TRW": 70.0, "TRW-2R": 68.2}
    path = figures.mia_nn_bars(values, 71.0, tmp_path / "mia_nn.png", title="digits / class 8")
    assert_png(path, *figures.SMALL_FIGSIZE)
    path = figures.mia_nn_bars(values, float("nan"), tmp_path / "mia_nn_noref.png")
    assert_png(path, *figures.SMALL_FIGSIZE)


@pytest.mark.parametrize("with_reference", [True, False])
def test_lambda_curve(tmp_path, with_reference):
    frame = pd.DataFrame({"lam": [0, 0, 5, 5, 10, 10, 20, 20],
                          "acc_r": [94.3, 94.4, 94.4, 94.3, 94.3, 94.2, 77.7, 77.6],
                          "mia_nn": [47.0, 47.4, 76.0, 76.2, 82.0, 82.2, 98.5, 98.7]})
    if with_reference:
        frame["mia_nn_reference"] = 80.0
    path = figures.lambda_curve(frame, tmp_path / "lambda.png")
    assert_png(path, *figures.LAMBDA_FIGSIZE)


def test_running_time_bars(tmp_path):
    seconds = {"Retrain": (250.0, 10.0), "FT": (60.0, 2.0), "TRW": (25.0, float("nan")), "TRW-2R": 18.25}
    path = figures.running_time_bars(seconds, tmp_path / "time.png")
    assert_png(path, *figures.SMALL_FIGSIZE)


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
