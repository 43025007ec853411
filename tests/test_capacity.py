"""Trials no node can run: on a fresh local Ray `run` stops at once, naming what a trial asks and what
the nodes have; on a cluster (--address) it says once that the trials wait for the autoscaler."""
import time

import pytest
import yaml

from grid import capacity, cli

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
    capacity.check({"cpu": 1, "gpu": 0.25}, "10.0.0.1:6379", echo=said.append, nodes=[{"CPU": 0.0, "GPU": 0.0}])
    assert len(said) == 1 and "autoscaler" in said[0] and "0.25 GPU" in said[0]


def test_run_with_a_gpu_on_a_machine_without_one_stops_in_seconds(tmp_path, ray_instance, capsys):
    """The shared test Ray has 2 CPUs and no GPU: `resources: {gpu: 1}` would wait forever."""
    grid = {"name": "no-gpu", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
            "methods": {"ft": {}}, "resources": {"cpu": 1, "gpu": 1}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    started = time.perf_counter()
    code = cli.main(["run", str(tmp_path / "g.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    assert code == 1 and time.perf_counter() - started < 20
    err = capsys.readouterr().err
    assert "1 GPU" in err and "no node" in err and "Traceback" not in err
    assert not (tmp_path / "storage" / "ray").exists()   # no Tuner ever started
