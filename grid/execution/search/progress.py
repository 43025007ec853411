"""SearchProgress: one line per finished search trial, naming its cell; tags the child runs ASHA stopped;
remembers which cells' trials failed (the driver fails those cells' parents and names the errors)."""
from mlflow.tracking import MlflowClient
from ray import tune

from grid.execution.search.cell_searchers import CELL


class SearchProgress(tune.Callback):
    """cells[i]: {"label": the cell's parent run name, "space": its searched params}."""

    def __init__(self, client, total, echo, cells):
        self.client, self.total, self.echo, self.cells, self.done = client, total, echo, cells, 0
        self.failed = {}   # cell index -> its trials that failed for good (Tune's Trial objects)

    def __getstate__(self):   # as stages.Progress: Tune pickles callbacks; echo, the client and failed are not state
        return {"tracking_uri": self.client.tracking_uri, "total": self.total, "cells": self.cells, "done": self.done}

    def __setstate__(self, state):
        uri = state.pop("tracking_uri")
        self.__dict__.update(state, echo=print, client=MlflowClient(uri), failed={})

    def _point(self, trial):
        cell = self.cells[trial.config[CELL]]
        values = ", ".join(f"{k}={trial.config[k]:.3g}" if isinstance(trial.config[k], float) else f"{k}={trial.config[k]}"
                           for k in cell["space"])
        return f"{cell['label']} {values}"

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        stopped = not result.get("finished")
        if stopped and result.get("run_id"):
            self.client.set_tag(result["run_id"], "stopped_early", "true")
            if self.client.get_run(result["run_id"]).info.status == "RUNNING":
                self.client.set_terminated(result["run_id"], "KILLED")
        self.echo(f"  [{self.done}/{self.total}] {self._point(trial)}: objective={result.get('objective', float('nan')):.2f} "
                  f"at epoch {result.get('epoch', '?')}" + (" (stopped early)" if stopped else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune calls this once a trial failed for good (after its retries)
        self.done += 1
        self.failed.setdefault(trial.config[CELL], []).append(trial)
        self.echo(f"  [{self.done}/{self.total}] FAILED {self._point(trial)}")
