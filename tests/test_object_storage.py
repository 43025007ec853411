"""`--storage s3://…`: weights, logits and Ray Tune's results in an object store, no shared folder.

moto's S3 server on 127.0.0.1 stands in for the bucket; the grid runs through `unlearn-grid run` on
the test session's Ray. ~30 s on 2 cores.
"""
import pytest

from grid import cli
from grid.plan import config
from grid.tracking import mlflow_runs
from services import s3_bucket
from trainables import store

pytestmark = pytest.mark.system   # the system tier: make test-system

GRID = {
    "name": "bucket",
    "datasets": "toy2d",
    "archs": "mlp",
    "forget_classes": [0],
    "seeds": [0],
    "train": {"epochs": 2, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 1}},
    "checkpoint_minutes": 0,     # every epoch: the checkpoints go to the bucket too
}


@pytest.fixture(scope="module")
def bucket():
    """(storage URI with credentials and endpoint, boto3 client) of an empty bucket on a local S3 server."""
    with s3_bucket() as (uri, client):
        yield uri("runs"), client


def keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="grid", Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_store_round_trips_through_a_bucket(bucket):
    storage, client = bucket
    store.save_logits(storage, "k1", [[1.0, 2.0]], [1])
    logits, labels = store.load_logits(storage, "k1")
    assert logits.tolist() == [[1.0, 2.0]] and labels.tolist() == [1]
    assert "runs/models/k1/test_logits.npz" in keys(client, "runs/")
    assert not store.has_model(storage, "k1")      # logits without weights are not a finished model
    client.put_object(Bucket="grid", Key="runs/models/k1/test_logits.npz", Body=b"truncated")   # hash kept
    with pytest.raises(store.StoreIntegrityError, match=r"k1 \(s3://grid/runs/models/k1/test_logits.npz\) is corrupt"):
        store.load_logits(storage, "k1")           # named without the URI's credentials
    with pytest.raises(FileNotFoundError, match="model.pt for key k2"):
        store.load_model_state(storage, "k2")


def test_join_keeps_the_query_last():
    assert store.join("s3://b/p?endpoint_override=h:1", "ray") == "s3://b/p/ray?endpoint_override=h:1"
    assert store.join("/data/x", "ray") == "/data/x/ray"


def test_a_grid_runs_with_storage_in_a_bucket(bucket, ray_instance, tmp_path, capsys):
    import yaml
    storage, client = bucket
    grid_file = tmp_path / "bucket.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["run", str(grid_file), "--tracking-uri", tracking_uri, "--storage", storage]) == 0
    plan = config.load(str(grid_file))
    stored = keys(client, "runs/models/")
    for trial in plan.original + plan.retrain + plan.unlearn:   # stored under model keys (trainables/keys.py)
        assert f"runs/models/{trial['model_key']}/test_logits.npz" in stored
    assert all(f"runs/models/{t['model_key']}/model.pt" in stored for t in plan.original + plan.retrain)
    # checkpoints go to runs/checkpoints/KEY/ (resumed from there: tests/test_real_cluster.py), and a
    # finished trial deletes its own; Tune's folder holds none
    assert not [k for k in keys(client, "runs/checkpoints/") if not k.endswith("/")]   # (a folder marker may stay)
    assert not [k for k in keys(client, "runs/ray/") if "checkpoint" in k]
    assert not list(tmp_path.glob("s3*")) and not (tmp_path / "runs").exists()   # nothing local instead
    # a rerun finds every model in the bucket and schedules nothing
    capsys.readouterr()
    assert cli.main(["run", str(grid_file), "--tracking-uri", tracking_uri, "--storage", storage]) == 0
    assert "0 original, 0 retrain, 0 unlearn trials run" in capsys.readouterr().out
    assert mlflow_runs.pending(plan.original, "original", tracking_uri, None, storage) == []
