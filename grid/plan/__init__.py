"""The grid as a plan: what a grid file asks for, before anything runs.

    config        load and validate a grid file, expand it into each stage's trials (start here)
    search_space  the `search:` block: its validation, spaces and cells
    cost          trials, cached work and GPU-hours of a grid (`unlearn-grid validate`)
    packing       several short trials to one Ray Tune trial
    shapes        trials per node and per GPU of a cluster's node types, its maximum at once
    order         the unlearn trials round-robin over their MIA-NN references

May import: trainables, analysis. Not Ray, not MLflow, nor any other part of grid.
"""
