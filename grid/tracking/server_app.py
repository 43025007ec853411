"""`unlearn-grid server`'s app: MLflow's own tracking server plus one read-only route for run tables.

    GET /unlearn-grid/v1/runs?stage=unlearn&status=FINISHED[,KILLED]&experiment_id=1[,2]&columns=tags.key[,…]

answers what grid/tracking/run_table.py read_columns reads from the server's own database, as compact
column-oriented JSON (gzip when the client accepts it): the same frame mlflow.search_runs gives,
but read with SQL (seconds for 20,000 runs, where MLflow's search builds ORM objects for a minute).
A store this cannot read with SQL, a database whose schema revision is not this MLflow's (the SQL
would read columns that moved; MLflow's search says to run `mlflow db upgrade`), or a server with
workspaces (whose experiments this route would not filter), answers 404: the client (grid/tracking/mlflow_runs.py) then uses MLflow's search instead.

Registered as the MLflow app plugin `unlearn-grid` (pyproject.toml, entry point group "mlflow.app");
grid/tracking/server.py runs `mlflow server --app-name unlearn-grid`, which has uvicorn load this module's
`app`: MLflow's FastAPI app, which mounts MLflow's Flask app, to which the route is added.
"""
import gzip

from flask import Response, jsonify, request
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app  # noqa: F401  (what uvicorn serves)

from grid.tracking import run_table


def _csv(name):
    """A comma-separated query parameter as a list; None when absent ("" is the empty list)."""
    value = request.args.get(name)
    if value is None:
        return None
    return [part for part in value.split(",") if part]


def _not_here(message):
    return jsonify({"error_code": "ENDPOINT_NOT_FOUND", "message": message}), 404


def readable_experiments(experiment_ids):
    """(the experiment ids the caller may read: None for all, a list otherwise; None or a refusal
    response). Without authentication everyone reads everything; the basic-auth app
    (grid/tracking/server_app_auth.py) replaces this with its permission check."""
    return experiment_ids, None


@flask_app.route(run_table.SERVER_ROUTE, methods=["GET"], endpoint="unlearn_grid_runs")
def runs():
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.server.handlers import _get_tracking_store
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    if MLFLOW_ENABLE_WORKSPACES.get():
        return _not_here("the run table does not filter by workspace: use MLflow's search")
    store = _get_tracking_store()
    if not isinstance(store, SqlAlchemyStore):
        return _not_here(f"the tracking store is a {type(store).__name__}, not a database: use MLflow's search")
    # the read replica when the server has one, as MLflow's own searches
    engine = getattr(store, "read_engine", None) or store.engine
    if not run_table.schema_is_current(engine):
        return _not_here("the database's schema is not this MLflow's (run `mlflow db upgrade`): use MLflow's search")
    experiment_ids = _csv("experiment_id")
    if experiment_ids is not None and not all(e.isdigit() for e in experiment_ids):
        return jsonify({"error_code": "INVALID_PARAMETER_VALUE",
                        "message": f"experiment_id must be integers, got {request.args['experiment_id']!r}"}), 400
    experiment_ids, refused = readable_experiments(experiment_ids)
    if refused is not None:
        return refused
    columns = run_table.read_columns(engine, stage=request.args.get("stage"), statuses=_csv("status"),
                                     experiment_ids=experiment_ids, columns=_csv("columns"))
    body = run_table.to_json(columns)
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body, compresslevel=1)   # level 1: most of the gain (repeated keys) at little CPU
        headers["Content-Encoding"] = "gzip"
    return Response(body, mimetype="application/json", headers=headers)
