"""The tracking service: MLflow on the driver, its tracking server, and the UI's addresses.

    mlflow_runs  MLflow on the driver: the experiment, which keys are finished, runs as a frame (start here)
    location     where the tracking store and the storage are by default (no MLflow import)
    run_table    runs read straight from MLflow's SQL tables
    server       `unlearn-grid server`: MLflow with PostgreSQL and proxied artifacts
    server_app   that server's app: MLflow's plus the run-table route (the `mlflow.app` entry point)
    ui           `unlearn-grid ui`: the MLflow UI's addresses for an experiment

May import: trainables (its store and tracking_http). No other part of grid, no Ray.
"""
