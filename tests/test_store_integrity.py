"""Stored files carry a SHA-256 sidecar: a corrupt, truncated or unhashed file is never used.

Unit tests on a folder storage (< 1 s), then a grid run through `unlearn-grid run` on a copy of conftest's
TINY store with an original truncated and a Retrain model's hash deleted (~25 s on 2 cores).
"""
import shutil
import subprocess

import mlflow
import numpy as np
import pytest
import torch

from conftest import TINY
from grid.plan import config
from trainables import data, models, references, store, trial, uris

KEY = "0123456789abcdef"


@pytest.fixture
def stored(tmp_path):
    """(storage, model) with a small model and its test logits stored under KEY."""
    storage = str(tmp_path / "storage")
    model = torch.nn.Linear(4, 3)
    store.save_model(storage, KEY, model)
    store.save_logits(storage, KEY, np.arange(12, dtype=np.float32).reshape(4, 3), [0, 1, 2, 0])
    return storage, model


def test_round_trip_with_a_hash_beside_each_file(stored):
    storage, model = stored
    state = store.load_model_state(storage, KEY)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    logits, labels = store.load_logits(storage, KEY)
    assert logits.shape == (4, 3) and labels.tolist() == [0, 1, 2, 0]
    assert store.has_model(storage, KEY) and store.verify(storage, KEY) is None
    folder = store.model_dir(storage, KEY)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "model.pt.sha256",
                                                         "test_logits.npz", "test_logits.npz.sha256"]
    if shutil.which("sha256sum"):   # the sidecars are sha256sum's format: checkable by hand
        subprocess.run(["sha256sum", "--quiet", "-c", "model.pt.sha256", "test_logits.npz.sha256"],
                       cwd=folder, check=True)


def test_a_truncated_model_is_an_integrity_error_naming_key_file_and_what_to_do(stored):
    storage, _ = stored
    path = store.model_dir(storage, KEY) / store.MODEL_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(store.StoreIntegrityError) as caught:
        store.load_model_state(storage, KEY)
    message = str(caught.value)
    assert f"model.pt for key {KEY}" in message and str(path) in message
    assert f"Delete {path.parent} and rerun" in message and "trained again" in message
    assert isinstance(caught.value, OSError)
    assert store.has_model(storage, KEY)   # presence only: the driver's verify (below) reads the bytes


def test_one_flipped_byte_in_the_logits_is_an_integrity_error(stored):
    storage, _ = stored
    path = store.model_dir(storage, KEY) / store.LOGITS_FILE
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0x01
    path.write_bytes(bytes(payload))
    with pytest.raises(store.StoreIntegrityError, match=f"test_logits.npz for key {KEY} .* is corrupt"):
        store.load_logits(storage, KEY)


def test_a_file_without_its_hash_is_not_a_stored_model(stored):
    """A deleted hash looks like a write that died between the file and its hash (or a file from before
    hashes): the model counts as missing, so `pending` schedules it, and reading it is refused."""
    storage, _ = stored
    (store.model_dir(storage, KEY) / "model.pt.sha256").unlink()
    assert not store.has_model(storage, KEY)
    with pytest.raises(store.StoreIntegrityError, match="has no model.pt.sha256: its write did not finish"):
        store.load_model_state(storage, KEY)
    (store.model_dir(storage, KEY) / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=f"no stored model.pt for key {KEY}"):
        store.load_model_state(storage, KEY)


def test_discard_corrupt_deletes_only_the_bad_keys(stored):
    storage, model = stored
    store.save_model(storage, "good", model)
    store.save_logits(storage, "good", np.zeros((2, 3)), [0, 1])
    store.save_logits(storage, KEY, np.zeros((1, 3)), [8], name=store.FORGET_TRAIN_LOGITS_FILE)
    (store.model_dir(storage, KEY) / store.FORGET_TRAIN_LOGITS_FILE).write_bytes(b"PK")   # any file of the key counts
    errors = store.discard_corrupt(storage, [KEY, "good", "never-stored"])
    assert [type(e) for e in errors] == [store.StoreIntegrityError]
    assert f"forget_train_logits.npz for key {KEY}" in str(errors[0])
    assert not store.model_dir(storage, KEY).exists() and not store.has_model(storage, KEY)
    assert store.has_model(storage, "good") and store.verify(storage, "good") is None


def test_rewriting_a_corrupt_file_heals_it(stored):
    storage, model = stored
    (store.model_dir(storage, KEY) / store.MODEL_FILE).write_bytes(b"garbage")
    store.save_model(storage, KEY, model)
    assert store.verify(storage, KEY) is None


def test_the_readers_refuse_a_corrupt_file(stored):
    """The unlearn trial loading its original, and its MIA-NN reference from Retrain logits."""
    storage, _ = stored
    info = data.get_info("digits")
    store.save_model(storage, KEY, models.build("small_cnn", info.num_classes, info.input_shape))
    for name in (store.MODEL_FILE, store.LOGITS_FILE):
        path = store.model_dir(storage, KEY) / name
        path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(store.StoreIntegrityError, match="model.pt"):
        trial.load_original({"arch": "small_cnn"}, {"storage": storage, "original_key": KEY}, info, torch.device("cpu"))
    with pytest.raises(store.StoreIntegrityError, match="test_logits.npz"):
        references.compute(storage, (KEY,), [8], {"split": "test", "class_weight": "balanced", "seed": 0})


def test_a_corrupt_original_is_retrained_before_unlearn_trials_use_it(tiny_grid, run_grid, tmp_path, capsys):
    """A copy of conftest's TINY store (its mlflow.db and storage) with seed 0's original truncated and its
    Retrain model's hash deleted (as if its write died midway): the next grid on it trains both again, in
    its own experiment, before any unlearn trial reads them."""
    folder = tiny_grid[0]
    shutil.copy(folder / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(folder / "storage", tmp_path / "storage", ignore=shutil.ignore_patterns("ray", "leases"))
    grid = {**TINY, "name": "integrity", "methods": {"rescale": {"epochs": 1}}, "ulira": {"shadow_models": 0}}
    plan = config.build_plan(grid)
    (original,) = [t["key"] for t in plan.original if t["spec"]["seed"] == 0]
    (retrain,) = [t for t in plan.retrain if t["spec"]["seed"] == 0]
    storage = tmp_path / "storage"
    model_file = store.model_dir(storage, original) / store.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:1000])                  # truncated
    (store.model_dir(storage, retrain["model_key"]) / "model.pt.sha256").unlink()   # as if its write died midway
    capsys.readouterr()
    _, tracking_uri, _ = run_grid(tmp_path, grid)
    out = capsys.readouterr().out
    assert f"stored model.pt for key {original}" in out and "is corrupt" in out
    assert "1 original, 1 retrain, 4 unlearn" in out          # each seed's Original row and rescale
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["tiny", "integrity"], max_results=1000)
    for key, stored in ((original, original), (retrain["key"], retrain["model_key"])):
        assert sorted(runs[runs["tags.key"] == key]["experiment_id"].map(
            {e.experiment_id: e.name for e in mlflow.search_experiments()})) == ["integrity", "tiny"]   # trained again
        assert (runs[runs["tags.key"] == key]["status"] == "FINISHED").all()
        assert store.has_model(str(storage), stored) and store.verify(str(storage), stored) is None
    retrained = runs[runs["tags.key"] == original]["end_time"].max()
    rescale = runs[(runs["tags.method"] == "rescale") & (runs["tags.seed"] == "0")]
    assert len(rescale) == 1 and rescale["tags.original_key"].iloc[0] == original
    assert rescale["start_time"].iloc[0] >= retrained                       # it loaded the retrained original


def test_a_run_points_at_its_stored_files_and_reports_read_them_from_storage_checked(stored, tmp_path):
    """Artifacts stored once: the run's stored.* tags (trainables/trial.py stored_tags) name the file in
    storage and its hash; grid/reports/report.py artifact() reads it from there, and never a corrupt copy."""
    from grid.reports import report
    storage, model = stored
    tags = trial.stored_tags(storage, KEY, store.MODEL_FILE, store.read(storage, KEY, store.MODEL_FILE))
    assert tags == {"stored.model.pt": str(store.model_dir(storage, KEY).resolve() / "model.pt"),
                    "stored.model.pt.sha256": store.recorded_hash(storage, KEY, "model.pt")}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run(tags=tags) as run:
        pass
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []
    state = report.artifact(run.info.run_id, "model.pt", lambda path: torch.load(path, weights_only=True))
    assert torch.equal(state["weight"], model.state_dict()["weight"])
    (store.model_dir(storage, KEY) / "model.pt").write_bytes(b"not the weights")
    with pytest.raises(store.StoreIntegrityError, match="not the .* its run recorded"):
        report.artifact(run.info.run_id, "model.pt", lambda path: None)


def test_a_bucket_files_uri_in_its_run_keeps_the_endpoint_but_no_credentials():
    # what stored_tags records for a bucket storage: a reader reaches the same bucket with its own credentials
    uri = "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&access_key=AK&secret_key=SK"
    assert uris.without_secrets(store.file_uri(uri, KEY, "model.pt")) == \
        f"s3://bucket/runs/models/{KEY}/model.pt?endpoint_override=http://127.0.0.1:9000"
