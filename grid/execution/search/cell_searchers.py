"""CellSearchers: every search cell's trials from one Tune searcher, so that one Tuner runs all cells side
by side while each cell keeps its own searcher, budget and concurrency limit.

It holds one ConcurrencyLimiter(OptunaSearch) per cell (grid/execution/search/cell.py). `suggest` asks the
cells in turn, starting after the cell that got the last trial (round robin, so every cell moves on),
skipping cells whose budget is spent or that are at their limit; the trial's config carries its cell's
index under CELL. It returns None while every cell with budget left is at its limit (Tune asks again
later) and Searcher.FINISHED once every budget is spent. Results and completions go to the searcher of
the cell that proposed the trial: a cell's Optuna study only ever sees its own trials.
"""
from ray.tune.search import Searcher

CELL = "cell"   # the trial config's key of its cell's index (the trainable and CellSchedulers read it)


class CellSearchers(Searcher):
    """searchers[i]: cell i's Searcher (behind its own ConcurrencyLimiter); budgets[i]: how many trials cell
    i may still propose."""

    def __init__(self, searchers, budgets, metric="objective", mode="min"):
        super().__init__(metric=metric, mode=mode)
        # not named `searcher`: Tune's SearchGenerator would take this for a wrapper and look inside it
        self.cells = list(searchers)
        self.budgets = list(budgets)
        self.owner = {}       # trial id -> the index of the cell that proposed it
        self.turn = 0         # the cell asked first at the next suggest

    def set_search_properties(self, metric, mode, config, **spec):
        return True   # each cell's searcher was built with its own space, metric and mode

    def suggest(self, trial_id):
        if not any(budget > 0 for budget in self.budgets):
            return Searcher.FINISHED
        for step in range(len(self.cells)):
            index = (self.turn + step) % len(self.cells)
            if self.budgets[index] <= 0:
                continue
            config = self.cells[index].suggest(trial_id)   # None: the cell is at its concurrency limit
            if config == Searcher.FINISHED:
                self.budgets[index] = 0
            elif config is not None:
                self.budgets[index] -= 1
                self.owner[trial_id] = index
                self.turn = index + 1
                return {**config, CELL: index}
        return None

    def on_trial_result(self, trial_id, result):
        if trial_id in self.owner:
            self.cells[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if trial_id in self.owner:
            self.cells[self.owner.pop(trial_id)].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path):
        """Nothing: an interrupted search resumes from its cells' MLflow child runs, not from Tune's state."""
