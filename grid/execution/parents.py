"""One MLflow parent run per `unlearn-grid run` invocation and stage, the stage's trial runs its children.

The MLflow UI nests a run under the run its `mlflow.parentRunId` tag names, so an experiment's runs
table shows a few rows — "unlearn 2026-12-03 22:40:01", "retrain …" — each expanding to its trials.
A parent is created when its stage first schedules something: a rerun that runs nothing adds none.

Parents carry no `stage` tag (every query for a stage's trials filters on it) but `parent_of` = the
stage; and `driver`, so a parent a dead driver left RUNNING is marked KILLED like its trials
(grid/execution/orphans.py).
"""
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

PARENT_TAG = "parent_of"


class StageParents:
    """The parent runs of one invocation: created on demand, ended by `end`."""

    def __init__(self, tracking_uri, experiment_id, grid_name, driver, storage=""):
        self.client = MlflowClient(tracking_uri)
        self.experiment_id, self.grid_name, self.driver = experiment_id, grid_name, driver
        self.storage = storage   # the `storage` tag (trainables/trial.py driver_tags): whose heartbeats count
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")   # one name stamp for every stage of the invocation
        self.open = {}       # stage -> run id
        self.counts = {}     # stage -> trials scheduled under it

    def run_id(self, stage, trials=0):
        """The stage's parent run id, created on first use; `trials` are added to its `trials` count."""
        if stage not in self.open:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{stage} {self.started}",
                tags={PARENT_TAG: stage, "grid": self.grid_name, "driver": self.driver, "storage": self.storage,
                      "invocation": f"{self.driver} {self.started}"})
            self.open[stage], self.counts[stage] = run.info.run_id, 0
        self.counts[stage] += trials
        return self.open[stage]

    def end(self, stages, status="FINISHED"):
        """End the open parents of `stages`, logging how many trials each scheduled."""
        for stage in [s for s in stages if s in self.open]:
            run_id = self.open.pop(stage)
            self.client.log_batch(run_id, metrics=[Metric("trials", self.counts.pop(stage), int(time.time() * 1000), 0)])
            self.client.set_terminated(run_id, status)

    def end_all(self, status):
        self.end(list(self.open), status)
