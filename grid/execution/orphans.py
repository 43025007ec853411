"""Runs a dead driver left RUNNING: find them and mark them KILLED, so the MLflow UI does not show
them as live forever and nothing counts them.

Every trial's run is tagged `driver` = "HOST:PID" of the `unlearn-grid run` that scheduled it. A RUNNING
run is an orphan when its driver ran on this machine and that process is gone. Runs of drivers on other
machines, or of a live process, are left alone: they may be a concurrent driver's trials in progress.
"""
import os
import socket

from mlflow.tracking import MlflowClient


def this_driver():
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid):
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # it exists, under another user
    return True


def is_orphan(driver_tag, hostname=None):
    host, _, pid = (driver_tag or "").rpartition(":")
    if not host or not pid.isdigit() or host != (hostname or socket.gethostname()):
        return False
    return not _alive(int(pid))


def mark_orphans(tracking_uri, experiment_id):
    """Mark the experiment's orphaned RUNNING runs KILLED (tag `orphaned`); returns how many."""
    client = MlflowClient(tracking_uri)
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50_000)
    orphans = [run for run in running if is_orphan(run.data.tags.get("driver"))]
    for run in orphans:
        client.set_tag(run.info.run_id, "orphaned", "true")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(orphans)
