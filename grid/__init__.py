"""Grid files, their orchestration on Ray Tune, tracking and reports, and the `unlearn-grid` CLI.

    cli        `unlearn-grid run | validate | tables | figures | best | ui | server` (start here)
    plan/      a grid file: validation, trials per stage, search spaces, cost, packing
    execution/ running the stages and searches on Ray Tune, and the faults around them
    tracking/  MLflow on the driver, the tracking server and the UI
    reports/   tables, figures and best-params grids from the logged runs
    grids/     the bundled grid files (`unlearn-grid run demo`)

Layering (tests/test_layering.py): plan and tracking import no other part; execution and reports
import plan and tracking; only cli imports them all. Nothing in trainables/ or analysis/ imports grid.
"""
