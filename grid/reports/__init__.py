"""Reports: an experiment's logged runs turned into tables, figures and the next grid.

    report      runs (and their artifacts) -> analysis -> tables and figures (start here: build_tables)
    neighbours  the neighbour-class agreement table's inputs
    best        `unlearn-grid best`: the grid that evaluates each searched method at its best params
    report_run  the experiment's MLflow run 'report' that holds what tables and figures last wrote

May import: grid.plan, grid.tracking, trainables, analysis. Not Ray, not grid.execution, not grid.cli.
"""
