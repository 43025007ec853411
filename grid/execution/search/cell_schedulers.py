"""Early stopping per search cell: ASHA over epochs (reduction factor 3) that never stops the cell's
default point, one per cell, so that trials of different cells are never compared on one rung (their
objectives measure gaps to different Retrain models, on different forget sets and methods).
"""
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from grid.execution.search.cell_searchers import CELL
from grid.plan import search_space

REDUCTION_FACTOR = 3   # ASHA keeps the best third at each rung: grace 2 -> rungs at epochs 2, 6, 18


class SparingDefault(ASHAScheduler):
    """ASHA that never stops the default point: it is the baseline every other trial is compared with."""

    def __init__(self, default, **options):
        super().__init__(**options)
        self.default = default

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)   # records the result at its rung
        if all(trial.config.get(k) == v for k, v in self.default.items()):
            return TrialScheduler.CONTINUE
        return decision


def sparing_default(cell, default, grace_epochs):
    """The cell's ASHA: rungs from `grace_epochs` up to the most epochs its space allows."""
    return SparingDefault(default, time_attr="epoch", metric="objective", mode="min",
                          max_t=search_space.max_epochs(cell["spec"]), grace_period=grace_epochs,
                          reduction_factor=REDUCTION_FACTOR)


class CellSchedulers(FIFOScheduler):
    """schedulers[i]: cell i's scheduler; every trial's events go to the scheduler of the cell in its
    config (CELL). Which pending trial starts next is FIFO over all cells: in the order CellSearchers
    proposed them, round robin over the cells."""

    def __init__(self, schedulers):
        super().__init__()
        self.schedulers = list(schedulers)

    def set_search_properties(self, metric, mode, **spec):
        return True   # each cell's scheduler was built with its own metric and mode

    def _of(self, trial):
        return self.schedulers[trial.config[CELL]]

    def on_trial_add(self, tune_controller, trial):
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self):
        return f"ASHA per search cell ({len(self.schedulers)} cells)"
