"""`unlearn-grid ui`: the MLflow UI on a store, and the address of each experiment's runs table.

MLflow 3.17's UI opens an experiment on its GenAI "Overview" (traces, token usage) unless its
address says `workflowType=machine_learning`: the workflow type comes from the URL, then from the
browser's local storage (set by the UI's GenAI / Model training switch), GenAI by default. The
experiment tag `mlflow.experimentKind` (set by grid/tracking/mlflow_runs.py) does not change that page in 3.17.
So the addresses printed here name the runs tab and the workflow type; opened in a fresh browser,
they show the runs table, nested by invocation and stage (grid/execution/parents.py).

    unlearn-grid ui                 # every experiment's address, then serves http://127.0.0.1:5000
    unlearn-grid ui demo --port 5001
"""
from urllib.parse import quote

import mlflow

WORKFLOW = "machine_learning"


def runs_address(server, experiment_id, search=None):
    """SERVER/#/experiments/ID/runs?workflowType=machine_learning[&searchFilter=…], SERVER e.g. http://127.0.0.1:5000."""
    address = f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType={WORKFLOW}"
    return address + (f"&searchFilter={quote(search)}" if search else "")


def experiments(tracking_uri, name=None):
    """[(name, id)] of the store's experiments with runs (newest first), or of the one named;
    LookupError naming the experiments there when `name` is not one."""
    client = mlflow.MlflowClient(tracking_uri)
    found = client.search_experiments(order_by=["creation_time DESC"])
    if name is not None:
        named = [(e.name, e.experiment_id) for e in found if e.name == name]
        if not named:
            raise LookupError(f"no experiment {name!r} in {tracking_uri}; experiments: {[e.name for e in found]}")
        return named
    # MLflow's empty "Default" experiment is not worth a line
    return [(e.name, e.experiment_id) for e in found
            if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]
