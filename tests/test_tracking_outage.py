"""A tracking server that is not there, or stops: `run` says so in one line instead of MLflow's minutes of
retries. Unreachable at start: exit 1 within seconds, nothing started or written. Stopped mid-grid (real
PostgreSQL + `unlearn-grid server`, the grid through `unlearn-grid run` in a subprocess): the driver
exits 1 with a summary; after a restart on the same store the rerun completes the grid, every key
FINISHED exactly once; the server is stopped while an unlearn trial is known to wait at a gate
(tests/plugins/gates.py). ~60 s on 2 cores (two server starts, two Rays).
"""
import collections
import contextlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

import services   # tests/services.py: PostgreSQL and the tracking server, stopped by the pids they started
from grid import cli
from grid.execution import connect
from trainables import tracking_http


@contextlib.contextmanager
def server_answering(status):
    """An HTTP server on 127.0.0.1 that answers every request with `status`: a broken proxy or server."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", ["nothing", 503])
def test_an_unreachable_tracking_server_is_one_line_within_seconds(answer, tmp_path, monkeypatch, capsys):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")
    monkeypatch.setattr(connect, "init", no_ray)
    monkeypatch.chdir(tmp_path)                            # the default ./unlearn-grid would land here too
    with contextlib.ExitStack() as stack:
        uri = (f"http://127.0.0.1:{services.free_port()}" if answer == "nothing"
               else stack.enter_context(server_answering(answer)))
        started = time.monotonic()
        code = cli.main(["run", "demo", "--tracking-uri", uri, "--storage", str(tmp_path / "storage")])
        seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, (code, seconds, err)         # how soon: bench/fail_fast.py
    assert err.count("\n") == 1 and err.startswith(f"error: no MLflow tracking server answers at {uri} (")
    assert ("connection refused" if answer == "nothing" else "HTTP 503") in err
    assert "start it (`unlearn-grid server …`) or check --tracking-uri" in err
    assert list(tmp_path.iterdir()) == []                  # no storage, no store, nothing


def test_the_drivers_own_request_on_a_stopped_server_is_one_line(tmp_path, monkeypatch, capsys):
    """A request of the driver's own (between stages, U-LiRA) that failed after its bounded retries."""
    from mlflow.exceptions import MlflowException

    from grid.execution import stages
    uri = f"http://127.0.0.1:{services.free_port()}"

    def outage_between_stages(*args, **kwargs):
        raise MlflowException(f"API request to {uri}/api/2.0/mlflow/runs/search failed with exception …")
    monkeypatch.setattr(stages, "run_grid", outage_between_stages)
    assert cli.main(["run", "demo", "--tracking-uri", uri, "--storage", str(tmp_path / "storage")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: the MLflow tracking server {uri} stopped answering "
                                                   f"(connection refused); run the same `unlearn-grid run` again")


GRID = {"name": "outage", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": 3, "lr": 0.05, "batch_size": 64, "lr_step": 10},
        # `gate` (tests/plugins/gates.py) waits until released, then fine-tunes, logging every epoch
        "methods": {"ft": {"epochs": 1}, "rl": {"epochs": 1}, "gate": {"epochs": 2}},
        "resources": {"cpu": 1, "gpu": 0}}
KEYS = 1 + 1 + 1 + len(GRID["methods"])     # original, Retrain, the Original row, the methods


def _runs(client, where=""):
    found = client.get_experiment_by_name(GRID["name"])
    return [] if found is None else client.search_runs([found.experiment_id], where, max_results=1000)


@pytest.mark.system
def test_a_server_stopped_mid_grid_fails_the_run_in_seconds_and_a_rerun_completes_it(
        tmp_path, monkeypatch, capsys, request, gates):
    grid_file = tmp_path / "outage.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    storage, artifacts = tmp_path / "storage", tmp_path / "artifacts"
    ray_tmp = tempfile.mkdtemp(prefix="ug-")   # the driver's own Ray session folder (short: socket paths)
    # the test's budget: one retry, so each trial gives up in seconds (the default is about a minute)
    gate = gates(method={"stage": "method"})
    env = {**os.environ, **gate.env, "RAY_TMPDIR": ray_tmp, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    timings, exited = {}, []
    started = time.monotonic()
    # the server's backend store does not matter to an outage: SQLite starts in a second, PostgreSQL in ~10
    db_uri = f"sqlite:///{tmp_path / 'server.db'}"
    with contextlib.ExitStack() as restarted, \
            open(tmp_path / "driver.out", "w") as out, open(tmp_path / "driver.err", "w") as err:
        try:
            with services.tracking_server(db_uri, artifacts, tmp_path / "server1.log") as url:
                timings["services"] = time.monotonic() - started
                driver = subprocess.Popen([str(services.BIN / "unlearn-grid"), "run", str(grid_file), "--tracking-uri",
                                           url, "--storage", str(storage)], stdout=out, stderr=err, env=env,
                                          cwd=tmp_path, start_new_session=True)
                waiter = threading.Thread(target=lambda: exited.append((driver.wait(), time.monotonic())), daemon=True)
                waiter.start()
                gate.wait("method", process=driver)    # an unlearn trial is running, its method waiting
                timings["until_unlearn"] = time.monotonic() - started - timings["services"]
                stopped = time.monotonic()       # leaving the block stops the server (SIGTERM its group)
            timings["server_stop"] = time.monotonic() - stopped
            gate.release("method")               # the gate trial logs its first epoch: to a server that is gone
            # restarted on the same store and artifacts (a new port) while the driver, which keeps the
            # old URI, finds the server gone and exits
            new_url = restarted.enter_context(services.tracking_server(db_uri, artifacts, tmp_path / "server2.log"))
            timings["restart"] = time.monotonic() - stopped - timings["server_stop"]
            waiter.join(timeout=120)
        finally:
            services.kill_session(driver.pid)   # what is left of its session (its Ray), if anything
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert exited, "the driver did not exit within 120 s of the server's stop"
        code, timings["driver_exit_after_stop"] = exited[0][0], exited[0][1] - stopped
        output = (tmp_path / "driver.out").read_text()
        error = (tmp_path / "driver.err").read_text().strip().splitlines()
        assert code == 1, output[-3000:] + "\n".join(error)[-3000:]
        assert error and error[-1].startswith(f"error: the MLflow tracking server {url} stopped answering during "
                                              f"the unlearn stage (connection refused): "), error[-1:]
        assert "run the same `unlearn-grid run` again once it answers" in error[-1]
        assert f"tracking server {url} does not answer (connection refused): stopping the stage" in output

        ray_started = time.monotonic()
        request.getfixturevalue("ray_instance")       # the rerun in-process, on the session's Ray
        timings["ray_instance"] = time.monotonic() - ray_started
        for name, value in tracking_http.RETRY_BUDGET.items():
            monkeypatch.setenv(name, value)            # restored after the test (run_grid sets them)
        capsys.readouterr()
        rerun = time.monotonic()
        assert cli.main(["run", str(grid_file), "--tracking-uri", new_url, "--storage", str(storage)]) == 0
        timings["rerun"] = time.monotonic() - rerun
        rerun_output = capsys.readouterr().out
        runs = _runs(MlflowClient(new_url))
    assert "stage original: 0 to run" in rerun_output and "stage retrain: 0 to run" in rerun_output
    assert "stage unlearn: 0 to run" not in rerun_output, rerun_output          # the outage cut it short
    assert not [r for r in runs if r.info.status == "RUNNING"]                   # orphans marked KILLED
    finished = collections.Counter(r.data.tags["key"] for r in runs if r.info.status == "FINISHED" and "key" in r.data.tags)
    assert len(finished) == KEYS and set(finished.values()) == {1}, finished
    print("\ntracking outage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
          + f"; runs {dict(collections.Counter(r.info.status for r in runs))}")
