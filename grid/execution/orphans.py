"""Runs a dead driver left RUNNING: find them and mark them KILLED, so the MLflow UI does not show
them as live forever and nothing counts them.

Every run is tagged `driver` = "HOST:PID" of the `unlearn-grid run` that scheduled it, and `storage` =
that driver's storage (secrets dropped; trainables/trial.py driver_tags). A RUNNING run is an orphan when
- its driver ran on this machine and that process is gone (at once, no store asked), or
- its driver ran on this storage (the same `storage` tag as ours) and that driver's lease heartbeat
  (`{storage}/leases/drivers/{driver}`, grid/execution/leases.py) is missing or older than STALE_S by
  the store's clock: a driver on another machine that died, or a head that was replaced.
A live driver, on any machine, rewrites its heartbeat every few seconds from before its first run to
after its last, so its runs stay RUNNING. Runs of a driver on another storage (its heartbeats are not
where we look) or without a `storage` tag (logged by older versions) are only judged by the first rule.
"""
import os
import socket

from mlflow.tracking import MlflowClient

from trainables import uris


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


def mark_orphans(tracking_uri, experiment_id, storage=None, gone=None):
    """Mark the experiment's orphaned RUNNING runs KILLED (tag `orphaned`); returns how many.
    `gone(driver)`: whether that driver's heartbeat in `storage` is missing or stale (Leases.gone at
    the store's time now); without it only this machine's dead drivers are found."""
    client = MlflowClient(tracking_uri)
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50_000)
    ours = uris.without_secrets(storage) if storage is not None else None
    verdicts = {}   # thousands of runs share a few drivers: one heartbeat read each

    def orphaned(tags):
        driver = tags.get("driver")
        if is_orphan(driver):
            return True
        if gone is None or not driver or tags.get("storage") != ours:
            return False
        if driver not in verdicts:
            verdicts[driver] = gone(driver)
        return verdicts[driver]

    orphans = [run for run in running if orphaned(run.data.tags)]
    for run in orphans:
        client.set_tag(run.info.run_id, "orphaned", "true")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(orphans)
