"""Failure paths through `unlearn-grid run` on Ray: a method that raises fails its trial, not the others;
`run` exits 1 naming the trial and the error; its FAILED run leaves the key pending, so the next run
tries it again. The method `fails_on_purpose` is registered in Ray's workers by conftest's setup_worker,
and here in the test's process while the test runs. ~40 s on 2 cores (toy2d/mlp)."""
import re

from mlflow import MlflowClient

from grid import cli, config, tracking
from trainables import methods

FAILING = "fails_on_purpose"
GRID = {"name": "failure-paths", "datasets": "toy2d", "archs": "mlp", "forget_classes": ["a"], "seeds": [0],
        "train": {"epochs": 3, "lr": 0.05, "batch_size": 64},
        "methods": {FAILING: {"epochs": 1}, "ft": {"epochs": 1}}, "resources": {"cpu": 1, "gpu": 0}}


def register_failing_method(monkeypatch):
    """FAILING in this process's registry (grid validation checks names) until the test ends."""
    def fails_on_purpose(task, params):
        raise RuntimeError("this method fails on purpose")
    methods.register(FAILING, epochs=1)(fails_on_purpose)
    monkeypatch.setitem(methods.METHODS, FAILING, methods.METHODS.pop(FAILING))


def test_a_method_that_raises_fails_run_naming_the_trial_and_its_key_stays_pending(
        tmp_path, ray_instance, monkeypatch, capsys):
    import yaml
    register_failing_method(monkeypatch)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "storage")
    command = ["run", str(grid_file), "--tracking-uri", tracking_uri, "--storage", storage]
    plan = config.load(str(grid_file))
    failing = next(t for t in plan.unlearn if t["spec"]["method"] == FAILING)

    assert cli.main(command) == 1
    err = capsys.readouterr().err
    # the summary names the failed trial by its run name, with the method's own error
    assert "1 unlearn trial(s) failed" in err, err
    assert re.search(rf"unlearn/{FAILING}\(epochs=1\)/toy2d/mlp/f\S+/s0u0: RuntimeError: this method fails on purpose",
                     err), err

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name("failure-paths").experiment_id
    runs = {r.data.tags["method"]: r for r in client.search_runs([experiment_id], "tags.stage = 'unlearn'")}
    assert runs[FAILING].info.status == "FAILED"
    assert runs["ft"].info.status == "FINISHED" and runs["original"].info.status == "FINISHED"   # the others ran
    # a FAILED run does not count as done: the key is still pending (a bug counting any run as done fails here)
    pending = tracking.pending(plan.unlearn, "unlearn", tracking_uri, experiment_id, storage)
    assert [t["key"] for t in pending] == [failing["key"]]

    assert cli.main(command) == 1          # the next run tries it again, and only it
    captured = capsys.readouterr()
    assert "stage unlearn: 1 to run, 2 already finished" in captured.out
    assert FAILING in captured.err
