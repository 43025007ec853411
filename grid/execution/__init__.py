"""Running a grid on Ray Tune: stages, searches, and what keeps them going when something fails.

    stages    original -> retrain -> unlearn, one Tuner each (start here: run_grid); U-LiRA as Ray tasks
    search    a grid's searches: every cell side by side in one Tuner, each with its own searcher (a package)
    connect   the driver's Ray: a fresh local instance or a cluster by address
    capacity  can the cluster ever fit one trial; how large it can grow (pack sizes)
    waiting   while trials wait for nodes, a line a minute with the autoscaler's report
    leases    which driver runs which trial key (several drivers on one store)
    parents   one MLflow parent run per invocation and stage
    faults    tracking outages, corrupt stored models, a stage's failures in one summary
    orphans   runs a dead driver left RUNNING

May import: grid.plan, grid.tracking, trainables, analysis. Not grid.reports, not grid.cli.
"""
