"""The `trw_2r_draws` table item (analysis/draws.py): TRW-2R's runs split by what each layer draw trained.

`items(runs, uncertainty)` returns [(name, title, table, show_index, units)] for write_tables, or []
when the runs have no TRW-2R run. The table is numeric (`<x> mean/std/ci_low/ci_high/n`).
"""
from analysis import draws, statistics

SPREAD_WORDS = {"seeds": "per-seed means", "forget_classes": "per-forget-set means (our reading of the paper's ±)",
                "units": "units"}


def title(uncertainty):
    level = round(100 * uncertainty.level)
    return ("TRW-2R by layer draw: batchnorm_only (every drawn layer a BatchNorm), mixed, weights_only (every one "
            "a Conv/Linear); unknown = a run from before `layers_kind` whose layer names do not say. Share = % of "
            f"the label's draws of that kind. Mean ± sample std over {SPREAD_WORDS[uncertainty.spread]}; {level}% "
            "bootstrap intervals over (seed, forget set, unlearning seed) units, "
            f"{uncertainty.resamples} resamples (MIA also resamples test samples where runs stored per-sample "
            f"predictions), seed {uncertainty.seed}; n = units.")


def items(runs, uncertainty=statistics.Uncertainty()):
    if "method" not in runs or not (runs["method"] == "trw_2r").any():
        return []
    table = draws.trw_2r_draws_table(runs, uncertainty)
    if table.empty:
        return []
    return [("trw_2r_draws", title(uncertainty), table, True, draws.trw_2r_draws_units(runs))]
