"""Faults the driver handles around a stage (README "When things fail"): a tracking server that stops
answering (stop the stage, one summary line), stored models that fail their hash (retrain them), and
a stage's failures as one short summary. Dead drivers' runs: grid/execution/orphans.py; capacity: grid/execution/capacity.py.
"""
from ray import tune

from grid.tracking import mlflow_runs
from trainables import store, tracking_http, uris


class StageFailed(RuntimeError):
    """Trials of a stage that failed (or were stopped: the tracking server stopped answering); the
    message is the summary `run` prints, a line per trial at most."""


def error_line(error):
    """A trial's error in one line: the exception's own last line, not Ray's traceback."""
    cause = getattr(error, "cause", None) or error   # a RayTaskError carries the trial's exception
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


class TrackingWatch(tune.Callback, tune.Stopper):
    """When a trial fails, probe the tracking server (http only; seconds at most); if it does not
    answer, stop the stage (as the Tuner's stopper, at its next step): the other trials could not log
    either, and MLflow's retries make each of them take about a minute to find out."""

    def __init__(self, tracking_uri, echo):
        self.tracking_uri, self.echo, self.outage = tracking_uri, echo, None

    def __getstate__(self):   # as Progress: echo is not state
        return {"tracking_uri": self.tracking_uri, "outage": self.outage}

    def __setstate__(self, state):
        self.__dict__.update(state, echo=print)

    def _check(self):
        if self.outage is None and tracking_http.is_http(self.tracking_uri):
            self.outage = tracking_http.probe(self.tracking_uri)
            if self.outage is not None:
                self.echo(f"  tracking server {uris.masked(self.tracking_uri)} does not answer ({self.outage}): stopping the stage")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check()

    def __call__(self, trial_id, result):   # Stopper: no trial is stopped for its results
        return False

    def stop_all(self):
        return self.outage is not None


def discard_corrupt_models(plan, tracking_uri, experiment_id, storage, echo, claims):
    """Before anything is scheduled: read and hash the stored originals/Retrain models that this run's
    pending unlearn trials, U-LiRA attacks and search cells will read; a key whose files fail is
    deleted, so the train stage below (mlflow_runs.pending: no stored model) trains it again.
    Worth a read of each model on the driver (digits/CIFAR models are a few MB, ResNet-18 ~45 MB):
    one corrupt original otherwise fails (or, unchecked, poisons) every unlearn trial built on it,
    while retraining it here costs one trial. A finished grid needs no model and reads nothing. Keys
    another driver holds (`claims`: grid/execution/leases.py) are being written: not read, let alone deleted."""
    unlearn = mlflow_runs.pending(plan.unlearn, "unlearn", tracking_uri, experiment_id, storage)
    keys = {t["original_key"] for t in unlearn} | {k for t in unlearn for k in t["retrain_model_keys"]}
    keys |= {k for a in mlflow_runs.pending(plan.ulira, "ulira", tracking_uri, experiment_id, storage) for k in a["out_keys"]}
    keys |= {c[k] for c in plan.search for k in ("original_key", "retrain_key")}
    keys -= set(claims.holders(sorted(keys)))
    for error in store.discard_corrupt(storage, sorted(keys)):
        echo(f"  {str(error).split('; ')[0]}: deleted, it is trained again")
