"""The registries that grid validation reads without torch (trainables/datasets.py, archs.py, the
methods' specs.json) say exactly what the torch side registers, and `validate` really imports none of
torch, MLflow, scikit-learn or Ray (that is why it answers at once: bench/cli_time.py measures it)."""
import json
import subprocess
import sys

from trainables import archs, data, datasets, methods, models


def test_specs_json_is_fresh_and_equals_the_registry_of_the_imported_methods():
    saved = json.loads(methods.SPECS_FILE.read_text())
    assert saved["sources_hash"] == methods.sources_hash(), \
        "trainables/methods/specs.json is stale: run `.venv/bin/python -m trainables.methods` and commit it"
    assert saved == json.loads(json.dumps(methods.specs())), "specs.json differs from what the method modules register"


def test_a_method_read_from_specs_json_runs_once_its_module_is_imported():
    method = methods.get("trw")
    assert callable(method.run) and method.module == "trainables.methods.trw"
    from trainables.similarity import SIMILARITIES
    assert methods.METHODS["trw"].choices["similarity"] == tuple(SIMILARITIES)


def test_every_arch_has_a_builder_and_every_builder_is_declared_with_its_channels():
    assert set(models.MODELS) == set(archs.ARCHS)
    assert archs.supports("resnet18_imagenet", (3, 32, 32)) and not archs.supports("resnet18_imagenet", (1, 28, 28))
    assert archs.supports("small_cnn", (1, 28, 28)) and archs.supports("small_cnn", (3, 32, 32))


def test_every_dataset_names_a_loader_that_exists():
    import importlib
    for info in datasets.DATASETS.values():
        module, function = info.loader.split(":")
        assert callable(getattr(importlib.import_module(module), function)), info.name
    assert data.get_info is datasets.get_info and data.DATASETS is datasets.DATASETS


def test_validate_imports_no_torch_mlflow_sklearn_or_ray(tmp_path):
    script = ("import sys\nfrom grid import cli\n"
              "assert cli.main(['validate', 'demo']) == 0\n"
              "heavy = [m for m in ('torch', 'mlflow', 'sklearn', 'ray', 'pandas') if m in sys.modules]\n"
              "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout
    assert list(tmp_path.iterdir()) == []                     # no store: validate writes nothing
