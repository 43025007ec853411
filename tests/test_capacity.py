"""Trials no node can run: on a fresh local Ray `run` stops at once, naming what a trial asks and what
the nodes have; on a cluster (--address) it says once that the trials wait for the autoscaler, or
stops as fast when the cluster has none (a real `ray start --head` without one, ~25 s)."""
import subprocess

import pytest
import yaml

from grid.execution import capacity
from grid import cli

CPU_ONLY = [{"CPU": 2.0, "GPU": 0.0}]


def test_a_trial_that_fits_a_node_passes():
    capacity.check({"cpu": 1, "gpu": 0}, None, nodes=CPU_ONLY)
    capacity.check({"cpu": 1, "gpu": 0.25}, None, nodes=CPU_ONLY + [{"CPU": 4.0, "GPU": 1.0}])


def test_no_node_fits_on_a_local_instance_names_the_ask_and_the_nodes():
    with pytest.raises(capacity.CapacityError) as error:
        capacity.check({"cpu": 1, "gpu": 1}, None, nodes=CPU_ONLY)
    assert "1 CPU, 1 GPU" in str(error.value) and "2 CPU" in str(error.value)


def test_no_node_fits_on_a_cluster_waits_for_its_autoscaler_and_says_so_once():
    said = []
    capacity.check({"cpu": 1, "gpu": 0.25}, "10.0.0.1:6379", echo=said.append, nodes=[{"CPU": 0.0, "GPU": 0.0}],
                   autoscaler=lambda: True)
    assert len(said) == 1 and "autoscaler to add one" in said[0] and "0.25 GPU" in said[0]
    capacity.check({"cpu": 1, "gpu": 0.25}, "10.0.0.1:6379", echo=said.append, nodes=[{"CPU": 0.0, "GPU": 0.0}],
                   autoscaler=lambda: None)   # no report: it may have one; say so, and how to stop
    assert len(said) == 2 and "Ctrl-C" in said[1]
    with pytest.raises(capacity.CapacityError, match="has no autoscaler"):
        capacity.check({"cpu": 1, "gpu": 0.25}, "10.0.0.1:6379", echo=said.append,
                       nodes=[{"CPU": 0.0, "GPU": 0.0}], autoscaler=lambda: False)


@pytest.mark.system
def test_a_cluster_without_an_autoscaler_that_cannot_run_a_trial_stops_the_run_in_seconds(tmp_path):
    """A head started by hand (`ray start --head --num-cpus=0`, no --autoscaling-config): its monitor
    reports the read-only provider; `run --address` stops instead of waiting forever."""
    from fake_autoscaler import VENV_BIN, FakeCluster
    cluster = FakeCluster(tmp_path, autoscaling=False)
    try:
        cluster.start()
        grid = {"name": "manual", "datasets": "toy2d", "archs": "mlp", "forget_classes": [0], "seeds": [0],
                "train": {"epochs": 1}, "methods": {"ft": {"epochs": 1}}}
        (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
        run = subprocess.run([str(VENV_BIN / "unlearn-grid"), "run", str(tmp_path / "g.yaml"), "--address",
                              cluster.address, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                              "--storage", str(tmp_path / "storage")],
                             env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        assert not cluster.stop(), "processes of the test's cluster still running"
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: no node of the cluster at {cluster.address} "
                                                          "can run a trial"), run.stderr[-2000:]
    assert "has no autoscaler" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "storage" / "ray").exists()   # no Tuner ever started


def test_run_with_a_gpu_on_a_machine_without_one_stops_in_seconds(tmp_path, ray_instance, capsys):
    """The shared test Ray has 2 CPUs and no GPU: `resources: {gpu: 1}` would wait forever."""
    grid = {"name": "no-gpu", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
            "methods": {"ft": {}}, "resources": {"cpu": 1, "gpu": 1}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    code = cli.main(["run", str(tmp_path / "g.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    assert code == 1          # how soon: bench/fail_fast.py
    err = capsys.readouterr().err
    assert "1 GPU" in err and "no node" in err and "Traceback" not in err
    assert not (tmp_path / "storage" / "ray").exists()   # no Tuner ever started
