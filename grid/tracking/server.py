"""`unlearn-grid server`: the MLflow tracking server for a cluster -- PostgreSQL for runs, proxied artifacts.

    unlearn-grid server --backend-store-uri "postgresql://mlflow@DB_HOST:5432/mlflow?sslmode=require" \\
        --artifacts-destination s3://BUCKET/mlflow-artifacts        # or a folder on the head node

The database password is never part of the URI: a command line is readable by every user of the
machine (`ps`, /proc/PID/cmdline) and lands in shell history and logs. libpq (psycopg, pg_dump, psql)
reads it from ~/.pgpass or the file $PGPASSFILE names (`host:port:database:user:password`, mode 600);
a URI that does hold one still works, with a warning (`warn_password`).

Many trials write at once on a cluster: SQLite locks the whole file per write and its locking is
unsafe on network file systems, so a cluster's runs go to PostgreSQL -- an external one (RDS for
PostgreSQL 18 in cluster.yaml), which outlives the head and `ray down` (docs/tracking-database.md).
On the cluster this runs under systemd on the head's host (deploy/unlearn-grid-mlflow.service). Artifacts are proxied (`--artifacts-destination`):
trials upload them over HTTP to this server, so workers need no credentials for the artifact store.
Binds 127.0.0.1 by default (reach it through an SSH tunnel); on a cluster bind the head's private
address. 0.0.0.0 is refused: MLflow has no authentication, so anyone who reaches the port can read,
change and delete every run. `--basic-auth` serves MLflow's basic-auth app (users, per-experiment
permissions) with the run-table route (grid/tracking/server_app_auth.py); it still speaks plain HTTP, so it binds a private address as well (passwords would cross the network in
clear text): put a TLS-terminating proxy in front for anything wider.
"""
import os
import sys
from urllib.parse import urlsplit

from trainables import uris

ALL_INTERFACES = ("0.0.0.0", "::", "[::]", "")
BACKENDS = ("postgresql://", "postgresql+psycopg://", "sqlite:///")
APP_NAME = "unlearn-grid"     # the "mlflow.app" entry point in pyproject.toml: grid/tracking/server_app.py
# the same route behind MLflow's basic-auth app (`--basic-auth`): grid/tracking/server_app_auth.py
APP_NAME_BASIC_AUTH = "unlearn-grid-basic-auth"


class ServerError(ValueError):
    pass


def backend_store_uri(uri):
    """The SQLAlchemy URI MLflow gets: bare postgresql:// means psycopg2 to SQLAlchemy, and the
    driver installed with this project is psycopg 3."""
    if not uri.startswith(BACKENDS):
        raise ServerError(f"--backend-store-uri must start with one of {list(BACKENDS)}, got {uri!r} "
                          "(PostgreSQL for a cluster; SQLite only for one machine)")
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + uri[len("postgresql://"):]
    return uri


def check_host(host):
    if host in ALL_INTERFACES:
        raise ServerError(f"--host {host!r} would expose the tracking server on every interface, and MLflow "
                          "has no authentication: bind 127.0.0.1 (the default; use an SSH tunnel) or the "
                          "node's private address behind a firewall")
    return host


def warn_password(uri, stream=None):
    """One line on stderr when the backend store URI holds a password (it is in this process's argv,
    and MLflow's, for anyone on the machine to read): where it belongs instead. True when it warned."""
    if not uris.has_password(uri):
        return False
    print(f"warning: --backend-store-uri {uris.masked(uri)} holds a password, which every user of this machine "
          "can read in its command line (ps): put it in ~/.pgpass or the file $PGPASSFILE names "
          "(host:port:database:user:password, mode 600) and drop it from the URI", file=stream or sys.stderr)
    return True


def check_database(uri, timeout_s=5):
    """Fail with one clear line when PostgreSQL does not answer, before MLflow's own traceback would."""
    if not uri.startswith("postgresql"):
        return
    import psycopg
    parts = urlsplit(uri)
    conninfo = "postgresql://" + uri.split("://", 1)[1]
    try:
        psycopg.connect(conninfo, connect_timeout=timeout_s).close()
    except psycopg.Error as error:
        where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ServerError(f"cannot connect to PostgreSQL at {where}: {reason}") from None


def check_app(name=APP_NAME):
    """`mlflow server --app-name` only knows apps registered as entry points: an install of this project
    older than its "mlflow.app" entry point would fail with MLflow's list of choices instead of the fix."""
    from importlib.metadata import entry_points
    if not any(point.name == name for point in entry_points(group="mlflow.app")):
        raise ServerError(f"this environment does not register the MLflow app {name!r} (pyproject.toml's "
                          "\"mlflow.app\" entry point): reinstall the project (`pip install -e .`)")


def command(backend, artifacts_destination, host="127.0.0.1", port=5000, workers=4, basic_auth=False):
    """The `mlflow server` command line, run with this environment's Python. --app-name: MLflow's app with
    this project's run-table route (grid/tracking/server_app.py, registered in pyproject.toml), served by
    uvicorn; with basic_auth, MLflow's basic-auth app with that route (grid/tracking/server_app_auth.py)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri(backend),
            "--artifacts-destination", artifacts_destination, "--serve-artifacts",
            "--host", check_host(host), "--port", str(port), "--workers", str(workers),
            "--app-name", APP_NAME_BASIC_AUTH if basic_auth else APP_NAME]


def check_basic_auth():
    """What MLflow checks before it starts workers for `--app-name basic-auth` (and skips for any other
    app name): the CSRF secret key is set and the admin user exists (created now from
    MLFLOW_AUTH_ADMIN_PASSWORD or the config's admin_password); one line instead of crashing workers."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth
    try:
        auth.get_flask_server_secret_key()
        auth.bootstrap_admin_user()
    except MlflowException as error:
        raise ServerError(f"--basic-auth: {error.message.strip().splitlines()[0]}") from None


def serve(backend, artifacts_destination, host="127.0.0.1", port=5000, workers=4, basic_auth=False):
    """Check the database, then replace this process with the MLflow server (its pid stays the same)."""
    local = "://" not in artifacts_destination
    if local:                                    # a folder: absolute, made once everything else checks out
        artifacts_destination = os.path.abspath(artifacts_destination)
    line = command(backend, artifacts_destination, host, port, workers, basic_auth)
    warn_password(backend)
    check_database(backend)
    check_app(line[-1])
    if basic_auth:
        check_basic_auth()
    if local:
        os.makedirs(artifacts_destination, exist_ok=True)
    print(" ".join(uris.masked(part) for part in line), flush=True)
    print(f"MLflow tracking server: http://{host}:{port}  (trials: --tracking-uri http://{host}:{port})", flush=True)
    os.execv(line[0], line)

