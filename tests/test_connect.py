"""Which Ray `unlearn-grid run` uses: its own local one by default, whatever a dead `ray start` left
recorded; an address that does not answer is one line within seconds, not a hang. (`--address auto`
joining a live cluster: test_multinode.py. `auto` with only a dead cluster recorded is not tested:
Ray then joins any other Ray running on the machine, by design.) Each CLI run is a subprocess with RAY_TMPDIR in a folder
this test owns, never the machine's /tmp/ray. ~40 s on 2 cores.
"""
import os
import shutil
import subprocess
import tempfile
import time

import mlflow
import pytest
import yaml

from services import BIN, free_port

pytestmark = pytest.mark.system   # the system tier: make test-system

GRID = {"name": "connect", "datasets": "toy2d", "archs": "mlp", "forget_classes": [0], "seeds": [0],
        "train": {"epochs": 1}, "methods": {"ft": {"epochs": 1}}}


@pytest.fixture
def ray_dir():
    """A RAY_TMPDIR of the test's own; short, since Ray's socket paths must stay under 107 bytes."""
    folder = tempfile.mkdtemp(prefix="ug-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_cli(tmp_path, ray_dir, *address, timeout=300):
    grid_file = tmp_path / "connect.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    started = time.monotonic()
    completed = subprocess.run([str(BIN / "unlearn-grid"), "run", str(grid_file), *address,
                                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "storage")],
                               capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                               env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                                    "RAY_TMPDIR": ray_dir})
    return completed, time.monotonic() - started


def stale_cluster_file(ray_dir):
    """What a crashed `ray start --head` leaves: ray_current_cluster naming a GCS nobody serves any more."""
    os.mkdir(os.path.join(ray_dir, "ray"))        # where Ray looks: $RAY_TMPDIR/ray/ray_current_cluster
    with open(os.path.join(ray_dir, "ray", "ray_current_cluster"), "w") as f:
        f.write(f"127.0.0.1:{free_port()}")


def test_an_unreachable_address_is_one_line_within_seconds_and_writes_nothing(tmp_path, ray_dir):
    port = free_port()                                   # nothing listens there
    completed, seconds = run_cli(tmp_path, ray_dir, "--address", f"127.0.0.1:{port}", timeout=60)
    assert completed.returncode == 1         # within run_cli's timeout; how soon: bench/fail_fast.py
    error = completed.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: no Ray cluster answers at ")
    assert f":{port} (--address 127.0.0.1:{port})" in error[0] and "drop --address" in error[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "storage").exists()   # nothing scheduled


def test_without_address_a_stale_cluster_file_does_not_stop_a_local_run(tmp_path, ray_dir):
    stale_cluster_file(ray_dir)
    completed, _ = run_cli(tmp_path, ray_dir)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "1 original, 1 retrain, 2 unlearn trials run" in completed.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("connect").experiment_id], "tags.stage LIKE '%'")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
