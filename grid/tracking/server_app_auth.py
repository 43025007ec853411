"""`unlearn-grid server --basic-auth`'s app: MLflow's basic-auth app with this project's run-table route.

`mlflow server --app-name` takes one app, so choosing MLflow's `basic-auth` would drop the run-table
route of `unlearn-grid` (grid/tracking/server_app.py), and choosing ours would drop authentication.
This module is the third app, registered as the "mlflow.app" entry point `unlearn-grid-basic-auth`
(pyproject.toml): it imports grid/tracking/server_app.py (which adds the route to MLflow's Flask app),
then builds MLflow 3.17's auth app on that Flask app (`mlflow.server.auth.create_app`), exactly as
`--app-name basic-auth` does. So every request to the route goes through MLflow's own login check
first (`_before_request`: HTTP basic auth; 401 without valid credentials), and the route then answers
only what the caller may read: an admin reads every experiment; any other user only the experiments on
which MLflow grants them READ (their own grants, their roles', else the config's default_permission):
naming an experiment they cannot read is MLflow's 403 (the client then falls back to MLflow's search,
which applies the same permissions), and asking for all experiments reads only the readable ones.

Configuration is MLflow's: MLFLOW_AUTH_CONFIG_PATH (an .ini with database_uri, admin_username,
default_permission; see docs/scale-out.md), MLFLOW_FLASK_SERVER_SECRET_KEY, and the first admin's
password from MLFLOW_AUTH_ADMIN_PASSWORD. `mlflow server` bootstraps the admin only for an app named
"basic-auth"; here each worker does it (MLflow's create_app tolerates workers racing on it), and
`unlearn-grid server --basic-auth` checks the settings first (grid/tracking/server.py).
"""
from mlflow.entities import ViewType
from mlflow.server import app as flask_app
from mlflow.server import auth

from grid.tracking import run_table, server_app


def _can_read(experiment_id, username):
    # MLflow's own resolution of a user's experiment permission (grants, roles, default_permission), as
    # its validators use it; private in 3.17, so tests/test_server_auth.py pins what it decides
    return auth._get_experiment_permission(str(experiment_id), username).can_read


def validate_can_read_experiments():
    """MLflow's before-request validator for the route (a logged-in non-admin; admins skip validators):
    every experiment the request names is readable. Without one, MLflow 3.17's fail-closed default
    (MLFLOW_BASIC_AUTH_FAIL_CLOSED) refuses the route to every non-admin."""
    named = server_app._csv("experiment_id")
    username = auth.authenticate_request().username
    return named is None or all(_can_read(e, username) for e in named)


def readable_experiments(experiment_ids):
    """server_app.readable_experiments under basic auth (the validator above has passed): all
    experiments (None) means, for a non-admin, the active ones they can read."""
    if experiment_ids is not None or auth.sender_is_admin():
        return experiment_ids, None
    from mlflow.server.handlers import _get_tracking_store
    username = auth.authenticate_request().username
    found = _get_tracking_store().search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50_000)
    return [e.experiment_id for e in found if _can_read(e.experiment_id, username)], None


auth.BEFORE_REQUEST_VALIDATORS[(run_table.SERVER_ROUTE, "GET")] = validate_can_read_experiments
server_app.readable_experiments = readable_experiments
app = auth.create_app(flask_app)   # MLflow's FastAPI app with its permission middleware (what uvicorn serves)
