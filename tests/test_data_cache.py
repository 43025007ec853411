"""Datasets and weights staged in a bucket and fetched once per node (trainables/data_cache.py), and the
driver's pre-check that refuses a grid whose data the workers could not read, before anything is written.

moto's S3 server on 127.0.0.1 stands in for the bucket; the MNIST files are tiny but in the real idx
format, read through torchvision as on a cluster. Fast tier, ~15 s on 2 cores (the two-process fetch
and the `run` through the CLI are most of it).
"""
import fcntl
import hashlib
import json
import multiprocessing
import uuid

import pytest
import torch
import yaml

from grid import cli
from grid.plan import config
from services import s3_bucket
from test_vision_datasets import write_mnist
from trainables import data, data_cache, datasets, models, store


@pytest.fixture(scope="module")
def bucket():
    """(a function giving a fresh data root URI in an empty bucket on a local S3 server, boto3 client)."""
    with s3_bucket() as (uri, client):
        # credentials in the URI, as a grid on a cluster gives them: every message must leave them out
        yield (lambda: uri(f"data-{uuid.uuid4().hex[:8]}")), client


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """This test's own node cache, outside tmp_path (the CLI tests check tmp_path stays empty)."""
    folder = tmp_path_factory.mktemp("node-cache")
    monkeypatch.setenv(data_cache.CACHE_ENV, str(folder))
    data._load_cached.cache_clear()
    yield folder
    data._load_cached.cache_clear()


def key_of(root, *parts):
    """The bucket key of {root}/parts (root: a URI from `bucket`)."""
    prefix = root.split("grid/", 1)[1].split("?")[0]
    return "/".join([prefix, *parts])


def staged_mnist(tmp_path, root):
    """Tiny MNIST files in tmp_path/local, staged under `root`; (local root, manifest)."""
    local = tmp_path / "local"
    write_mnist(local)
    return local, data_cache.stage_dataset("mnist", local, root)


# ---------------------------------------------------------------- stage and fetch

def test_a_staged_dataset_loads_from_the_bucket_like_the_local_folder(tmp_path, bucket, cache):
    fresh_root, client = bucket
    root = fresh_root()
    local, manifest = staged_mnist(tmp_path, root)
    assert manifest["dataset"] == "mnist" and manifest["folder"] == "MNIST/raw" and manifest["file_count"] == 4
    archive = client.get_object(Bucket="grid", Key=key_of(root, "mnist", "files.tar"))["Body"].read()
    assert len(archive) == manifest["archive_bytes"]
    expected = data.load("mnist", str(local))
    for path in sorted(local.rglob("*"), reverse=True):   # the files now exist only in the bucket
        path.unlink() if path.is_file() else path.rmdir()
    data._load_cached.cache_clear()

    loaded = data.load("mnist", root)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(loaded, field), getattr(expected, field)), field
    assert len(data_cache.downloads()) == 1
    assert "testing:testing" not in "".join(data_cache.downloads())       # no credentials in the cache's log
    data._load_cached.cache_clear()          # a new process on the same node: the cached copy, no download
    data.load("mnist", root)
    assert len(data_cache.downloads()) == 1
    assert data_cache.local_root(root).parent.parent == cache


def test_a_corrupt_archive_is_refused_naming_both_hashes_and_nothing_stays_in_the_cache(tmp_path, bucket):
    fresh_root, client = bucket
    root = fresh_root()
    _, manifest = staged_mnist(tmp_path, root)
    client.put_object(Bucket="grid", Key=key_of(root, "mnist", "files.tar"), Body=b"not the staged archive")
    with pytest.raises(data_cache.DataUnavailable) as error:
        data_cache.fetch_dataset(root, "mnist")
    message = str(error.value)
    assert message.startswith("dataset mnist: ") and manifest["archive_sha256"] in message
    assert hashlib.sha256(b"not the staged archive").hexdigest() in message
    assert "testing:testing" not in message and "\n" not in message
    local_root = data_cache.local_root(root)
    assert not local_root.exists() or [p for p in local_root.rglob("*")] == []
    assert data_cache.downloads() == []


def test_an_archive_with_a_link_is_refused_even_when_its_hash_matches(tmp_path, bucket):
    """A staged archive is extracted only if it holds plain files and folders under the dataset's folder:
    a link could point the extraction, or a later read, outside the cache."""
    import io
    import tarfile
    fresh_root, client = bucket
    root = fresh_root()
    _, manifest = staged_mnist(tmp_path, root)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("MNIST/raw/train-images-idx3-ubyte")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    payload = buffer.getvalue()
    client.put_object(Bucket="grid", Key=key_of(root, "mnist", "files.tar"), Body=payload)
    manifest = {**manifest, "archive_sha256": hashlib.sha256(payload).hexdigest(), "archive_bytes": len(payload)}
    client.put_object(Bucket="grid", Key=key_of(root, "mnist", "manifest.json"), Body=json.dumps(manifest).encode())
    with pytest.raises(data_cache.DataUnavailable, match=r"MNIST/raw/train-images-idx3-ubyte\); stage it again"):
        data_cache.fetch_dataset(root, "mnist")
    assert not list(data_cache.local_root(root).rglob("train-images-idx3-ubyte"))


def fetch_after_barrier(barrier, root, results):
    """One trial's process: wait for the other, then fetch (spawned: a module-level function)."""
    barrier.wait()
    fetched = data_cache.fetch_dataset(root, "mnist")
    results.put(sorted(p.name for p in (fetched / "MNIST" / "raw").iterdir()))


def test_two_processes_fetching_at_once_download_once_and_both_get_the_files(tmp_path, bucket):
    fresh_root, _ = bucket
    root = fresh_root()
    staged_mnist(tmp_path, root)
    context = multiprocessing.get_context("spawn")    # not fork: the parent holds pyarrow's S3 client and moto's threads
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=fetch_after_barrier, args=(barrier, root, results)) for _ in range(2)]
    for process in processes:
        process.start()
    listings = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    files = sorted(["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                    "train-labels-idx1-ubyte"])
    assert listings == [files, files]
    assert len(data_cache.downloads()) == 1


def test_a_download_true_load_of_a_local_root_runs_under_the_node_lock(tmp_path, monkeypatch, cache):
    held = []

    def probe_loader(data_root, download):
        held.append(lock_is_taken(cache))
        return "loaded"
    monkeypatch.setitem(datasets.DATASETS, "probe", datasets.DatasetInfo(
        name="probe", num_classes=2, class_names=("a", "b"), input_shape=(1, 1, 1), loader=probe_loader, folder="probe"))
    assert data.load("probe", str(tmp_path), download=True) == "loaded"
    data._load_cached.cache_clear()
    assert data.load("probe", str(tmp_path), download=False) == "loaded"
    assert held == [True, False]


def lock_is_taken(cache_folder):
    """Whether another process of the node would wait for a download lock now: flock locks belong to an
    open file, so a second open() here conflicts with the lock data.load holds like another process's would."""
    for path in (cache_folder / "locks").glob("local-*.lock"):
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def test_staged_weights_are_fetched_checked_and_loaded(tmp_path, bucket):
    import torchvision
    fresh_root, client = bucket
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()                # stands in for the ImageNet weights
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(imagenet.state_dict(), path)
    imagenet_bytes = path.read_bytes()
    uri = store.join(fresh_root(), "weights", path.name)
    digest = data_cache.stage_file(path, uri)
    path.unlink()

    model = models.build("resnet18_imagenet", 10, (3, 32, 32))
    models.load_pretrained("resnet18_imagenet", model, uri)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert data_cache.fetch_file(uri).read_bytes() and len(data_cache.downloads()) == 1   # fetched once

    client.put_object(Bucket="grid", Key=key_of(uri), Body=b"other bytes")
    client.put_object(Bucket="grid", Key=key_of(uri) + ".sha256", Body=b"0" * 64 + b"  resnet18-f37072fd.pth\n")
    with pytest.raises(data_cache.DataUnavailable, match=f"data.weights: .* has SHA-256 {hashlib.sha256(b'other bytes').hexdigest()}"):
        data_cache.fetch_file(uri)
    assert digest == hashlib.sha256(imagenet_bytes).hexdigest()


# ---------------------------------------------------------------- the pre-check

def test_the_pre_check_says_in_one_line_what_is_missing_and_how_to_stage_it(tmp_path, bucket):
    fresh_root, client = bucket
    root = fresh_root()
    public = data_cache.public_uri(root)
    with pytest.raises(data_cache.DataUnavailable) as error:
        data_cache.check_available("mnist", root)
    assert str(error.value) == (f"dataset mnist: {public} holds no staged copy (no mnist/manifest.json); stage it from "
                                f"a machine with the files: unlearn-grid stage-data mnist --from DIR --to {public}")
    staged_mnist(tmp_path, root)
    data_cache.check_available("mnist", root)
    client.delete_object(Bucket="grid", Key=key_of(root, "mnist", "files.tar"))
    with pytest.raises(data_cache.DataUnavailable, match="has a manifest.json but no files.tar; stage it again"):
        data_cache.check_available("mnist", root)

    empty = tmp_path / "empty"
    with pytest.raises(data_cache.DataUnavailable) as error:
        data_cache.check_available("cifar10", empty)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"dataset cifar10: {empty} holds no cifar10 files")
    assert "unlearn-grid stage-data cifar10 --from DIR --to URI" in message
    data_cache.check_available("cifar10", empty, download=True)   # the loader downloads it
    data_cache.check_available("digits", root)                     # ships with scikit-learn: always there
    with pytest.raises(data_cache.DataUnavailable, match=r"^data.weights: .* is not staged"):
        data_cache.check_file_available(store.join(root, "weights", "missing.pth"))


def test_an_unreachable_bucket_is_one_line_too():
    root = "s3://testing:testing@grid/data?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"   # nothing listens
    with pytest.raises(data_cache.DataUnavailable) as error:
        data_cache.check_available("mnist", root)
    assert str(error.value).startswith("dataset mnist: could not read s3://grid/data") and "\n" not in str(error.value)


GRID = {"name": "bucket-data", "datasets": "mnist", "archs": "small_cnn", "forget_classes": [1],
        "methods": {"ft": {}}}


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_grid_whose_bucket_lacks_its_dataset_is_exit_2_in_one_line_with_nothing_written(command, tmp_path,
                                                                                           bucket, capsys):
    fresh_root, _ = bucket
    root = fresh_root()
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "data": {"root": root}}))
    code = cli.main([command, str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    err = capsys.readouterr().err
    assert code == 2, err
    public = data_cache.public_uri(root)
    assert err.strip().splitlines() == [(f"error: dataset mnist: {public} holds no staged copy (no mnist/manifest.json); "
                                         f"stage it from a machine with the files: unlearn-grid stage-data mnist "
                                         f"--from DIR --to {public}")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]   # no MLflow store, no storage


def test_run_checks_a_local_data_root_on_the_driver(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))                 # the default root ./unlearn-grid/data: empty here
    assert cli.main(["run", str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: dataset mnist: {tmp_path / 'unlearn-grid' / 'data'} holds no mnist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_download_with_a_bucket_root_is_refused_naming_the_field(bucket):
    fresh_root, _ = bucket
    with pytest.raises(config.GridError) as error:
        config.build_plan({**GRID, "data": {"root": fresh_root(), "download": True}})
    (field, message), = error.value.problems
    assert field == "data.download" and "stage-data" in message and "testing:testing" not in message
    plan = config.build_plan({**GRID, "data": {"root": fresh_root()}})   # a bucket root by itself is fine
    assert plan.grid["data"]["root"].startswith("s3://")


# ---------------------------------------------------------------- `unlearn-grid stage-data`, `--data-root`

def test_stage_data_end_to_end_then_a_grid_validates_against_the_bucket(tmp_path, bucket, capsys):
    fresh_root, client = bucket
    root = fresh_root()
    local = tmp_path / "local"
    write_mnist(local)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))           # no data block: --data-root says where the data is
    assert cli.main(["validate", str(grid), "--data-root", root]) == 2
    capsys.readouterr()

    assert cli.main(["stage-data", "mnist", "--from", str(local), "--to", root, "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    manifest = json.loads(client.get_object(Bucket="grid", Key=key_of(root, "mnist", "manifest.json"))["Body"].read())
    assert f"staged mnist: 4 files, {manifest['archive_bytes']} bytes, sha256 {manifest['archive_sha256']}" in out
    assert f"sha256 {data_cache.sha256_file(weights)}" in out
    snippet = yaml.safe_load(out.split("in the grid:\n", 1)[1])
    assert snippet == {"data": {"root": root, "weights": store.join(root, "weights", "w.pth")}}
    assert cli.main(["validate", str(grid), "--data-root", root]) == 0
    assert cli.main(["stage-data", "mnist", "--from", str(tmp_path / "nothing"), "--to", root]) == 2
    assert "point --from at the data root that holds MNIST/raw/" in capsys.readouterr().err
