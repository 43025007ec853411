"""`unlearn-grid server --basic-auth`'s app (grid/tracking/server_app_auth.py): MLflow's basic-auth app with
the run-table route, served by uvicorn as `mlflow server --app-name unlearn-grid-basic-auth` serves it
(MLflow's server environment variables, on a SQLite store): the route answers nobody without a login,
an admin everything, and a user only the experiments MLflow lets them read. ~20 s on 2 cores."""
import os
import subprocess
import sys

import pytest
import requests
from mlflow.server import constants
from mlflow.tracking import MlflowClient

from grid import cli
from grid.tracking import run_table, server
from services import free_port, wait_for

pytestmark = pytest.mark.system
ADMIN, ALICE = ("admin", "admin-password-1234"), ("alice", "alice-password-1234")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """(url, {experiment name: id}, {experiment name: [run ids]}) of the basic-auth app on a fresh store
    where alice may read experiment 'granted' only (default_permission NO_PERMISSIONS)."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth needs mlflow[auth] (pyproject.toml)")
    folder = tmp_path_factory.mktemp("auth")
    store_uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(store_uri)
    experiments = {name: client.create_experiment(name) for name in ("granted", "hidden")}
    runs = {name: [client.create_run(experiment_id, tags={"stage": "unlearn"}).info.run_id for _ in range(2)]
            for name, experiment_id in experiments.items()}
    config = folder / "auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{folder / 'auth.db'}\n"
                      "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "_MLFLOW_SGI_NAME": "uvicorn",
           constants.BACKEND_STORE_URI_ENV_VAR: store_uri, constants.SERVE_ARTIFACTS_ENV_VAR: "true",
           constants.ARTIFACTS_DESTINATION_ENV_VAR: str(folder / "artifacts"),
           "PYTHONPATH": os.pathsep.join([os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])])}
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                                # the module the entry point `unlearn-grid-basic-auth` names (pyproject.toml)
                                "--workers", "1", "grid.tracking.server_app_auth:app"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
        try:
            return requests.get(f"{url}/health", timeout=2).ok
        except requests.ConnectionError:
            return False
    try:
        wait_for(healthy, 120, "the basic-auth app")
        created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=ADMIN, timeout=30,
                                json={"username": ALICE[0], "password": ALICE[1]})
        assert created.ok, created.text
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
        grants = SqlAlchemyStore()
        grants.init_db(f"sqlite:///{folder / 'auth.db'}")
        grants.grant_user_permission(ALICE[0], "experiment", experiments["granted"], "READ")
        yield url, experiments, runs
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
        log.close()


def read(url, who, **query):
    return requests.get(f"{url}{run_table.SERVER_ROUTE}", params={"stage": "unlearn", "status": "RUNNING", **query},
                        auth=who, timeout=30)


def test_the_run_table_route_wants_a_login(auth_server):
    url, _, _ = auth_server
    assert read(url, None).status_code == 401
    assert read(url, ("alice", "not-her-password")).status_code == 401


def test_an_admin_reads_every_experiment(auth_server):
    url, experiments, runs = auth_server
    answer = read(url, ADMIN)
    assert answer.status_code == 200
    assert sorted(answer.json()["run_id"]) == sorted(runs["granted"] + runs["hidden"])


def test_a_user_reads_only_what_mlflow_lets_them_read(auth_server):
    url, experiments, runs = auth_server
    everything = read(url, ALICE)                                # all experiments: only the readable ones
    assert everything.status_code == 200, everything.text
    assert sorted(everything.json()["run_id"]) == sorted(runs["granted"])
    granted = read(url, ALICE, experiment_id=experiments["granted"])
    assert granted.status_code == 200 and sorted(granted.json()["run_id"]) == sorted(runs["granted"])
    hidden = read(url, ALICE, experiment_id=f"{experiments['granted']},{experiments['hidden']}")
    assert hidden.status_code == 403                             # MLflow's own refusal: the client falls back


def test_server_basic_auth_chooses_that_app():
    line = server.command("sqlite:////tmp/m.db", "/tmp/artifacts", basic_auth=True)
    assert line[line.index("--app-name") + 1] == "unlearn-grid-basic-auth"
    assert cli.parser().parse_args(["server", "--backend-store-uri", "sqlite:///m.db", "--artifacts-destination",
                                    "a", "--basic-auth"]).basic_auth


def test_basic_auth_without_its_secret_key_is_one_line_before_anything_starts(monkeypatch):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth needs mlflow[auth] (pyproject.toml)")
    monkeypatch.delenv("MLFLOW_FLASK_SERVER_SECRET_KEY", raising=False)
    with pytest.raises(server.ServerError, match="^--basic-auth: A static secret key needs to be set") as refused:
        server.check_basic_auth()
    assert "\n" not in str(refused.value)
