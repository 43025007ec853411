"""Run a grid's searches on Ray Tune (grid/plan/search_space.py says what a cell is): every cell's trials
side by side in one Tuner, each cell with its own searcher, budget and concurrency limit.

Per cell: Optuna's TPE (or random) sampler through Ray's OptunaSearch, seeded from the grid's search.seed
and the cell, behind a ConcurrencyLimiter of max_concurrent; ASHA over epochs when early_stopping is set,
its own per cell. The method's default params are the first point and ASHA never stops them: the search
can only match or beat the default. MLflow: a parent run per cell (stage=search), every trial a child run.

Resume: a rerun skips cells whose parent run finished its budget, and a cell that was interrupted
continues — its finished child runs go back into a fresh Optuna study as evaluated points (trials
stopped early count with the objective they reached), and only the rest of the budget runs.

Modules: `cell` (one cell's searcher, parent run and evaluated trials), `cell_searchers` (CellSearchers:
all cells' searchers as one Tune searcher), `cell_schedulers` (ASHA per cell), `progress` (a line per
trial), `side_by_side` (the stage: claims, references in parallel, the shared Tuner).
"""
from grid.execution.search.cell import distributions, evaluated_trials, finish_parent, sampler_for
from grid.execution.search.cell_schedulers import REDUCTION_FACTOR, SparingDefault
from grid.execution.search.side_by_side import run_searches
from trainables.search_trial import validation_reference

__all__ = ["REDUCTION_FACTOR", "SparingDefault", "distributions", "evaluated_trials", "finish_parent", "run_searches",
           "sampler_for", "validation_reference"]
