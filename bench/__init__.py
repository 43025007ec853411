"""Benchmarks: speed and memory measured against a baseline run in the same command, never in the tests.

    cli_time          how soon `unlearn-grid` answers (--help, validate) against `python -c pass`
    import_time       what a trial's worker pays to import its code
    fail_fast         how soon `run` gives up on what cannot work (server, Ray address, GPU)
    trial_overhead    Ray Tune + MLflow per trial against a plain loop (start here)
    scale             trials per second and driver memory up to 5,000 trials; tables over 20,000 runs
    run_table_read    reading runs with SQL against mlflow.search_runs
    train_throughput  the training loop's images per second: DataLoader, plain and fast paths
    ui_check          the MLflow UI in headless Chromium (`make ui-check`)
    timing            wall time of a command and the median table (cli_time, import_time)

Each is a script: `.venv/bin/python bench/NAME.py --help`. May import grid, trainables and analysis.
"""
