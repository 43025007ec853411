"""When the run table is NOT read with SQL (grid/tracking/run_table.py): a database whose schema revision is not
this MLflow's (read through MLflow, which says to run `mlflow db upgrade`; the server's route answers 404), and
a server behind authentication that answers the route with 401/403/405 (MLflow's own search instead)."""
import shutil
import types

import pandas as pd
import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from grid.tracking import mlflow_runs, run_table


def older_revision():
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    head = run_table.expected_revision()
    return ScriptDirectory.from_config(_get_alembic_config("")).get_revision(head).down_revision


def make_store(folder):
    """A SQLite store with one finished unlearn run; its URI."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("grid", artifact_location=(folder / "artifacts").as_uri())
    run = client.create_run(experiment, tags={"stage": "unlearn", "key": "k1"}).info.run_id
    client.set_terminated(run)
    return uri


def stamp(uri, revision):
    """What a database migrated by another MLflow version looks like to this one."""
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("template"))


@pytest.fixture
def store(template, tmp_path):
    """A copy of the template store at a path no MLflow store of this process has opened (MLflow keeps one
    store object per URI, checked once, when it is made)."""
    shutil.copy(template[len("sqlite:///"):], tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_current_schema_is_read_with_sql(store, monkeypatch):
    def no_search(*args):
        raise AssertionError("read through mlflow.search_runs")
    monkeypatch.setattr(mlflow_runs, "_runs_from_mlflow", no_search)
    assert mlflow_runs.finished_keys(store, "unlearn") == {"k1"}


def test_another_schema_revision_is_not_read_with_sql_but_through_mlflow(store, monkeypatch):
    stamp(store, older_revision())

    def no_sql(*args, **kwargs):
        raise AssertionError("read with SQL")
    monkeypatch.setattr(run_table, "read_runs", no_sql)
    with pytest.raises(MlflowException, match="out-of-date database schema.*mlflow db upgrade"):
        mlflow_runs.finished_keys(store, "unlearn")
    assert run_table.schema_is_current(run_table.engine(store)) is False


def test_the_servers_route_answers_404_on_another_schema_revision(store, monkeypatch):
    from mlflow.server import handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from grid.tracking import server_app
    tracking_store = SqlAlchemyStore(store, "file:///tmp/unused-artifacts")
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: tracking_store)
    client = server_app.flask_app.test_client()
    route = f"{run_table.SERVER_ROUTE}?stage=unlearn&status=FINISHED"
    answer = client.get(route)
    assert answer.status_code == 200 and answer.get_json()["tags.key"] == ["k1"]
    stamp(store, older_revision())                                  # `mlflow db upgrade` by another version
    monkeypatch.setattr(run_table, "_schema_current", {})           # a server started after it
    answer = client.get(route)
    assert answer.status_code == 404 and "mlflow db upgrade" in answer.get_json()["message"]


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_a_route_behind_authentication_falls_back_to_mlflows_search(status, monkeypatch, capsys):
    from mlflow.utils import rest_utils
    asked = []
    monkeypatch.setattr(rest_utils, "http_request", lambda host_creds, endpoint, method, **kw: asked.append(endpoint)
                        or types.SimpleNamespace(status_code=status, text="Unauthorized"))
    searched = pd.DataFrame({"run_id": ["r1"], "experiment_id": ["1"], "tags.key": ["k1"], "end_time": [pd.Timestamp(0)]})
    monkeypatch.setattr(mlflow_runs, "_runs_from_mlflow", lambda *args: searched)
    assert mlflow_runs.finished_keys("https://tracking.example", "unlearn") == {"k1"}
    assert asked == [run_table.SERVER_ROUTE]
    assert capsys.readouterr() == ("", "")


def test_a_server_error_on_the_route_is_still_an_error(monkeypatch):
    from mlflow.utils import rest_utils
    monkeypatch.setattr(rest_utils, "http_request", lambda *args, **kw: types.SimpleNamespace(status_code=500,
                                                                                             text="boom"))
    with pytest.raises(MlflowException, match="answered HTTP 500: boom"):
        mlflow_runs.finished_keys("https://tracking.example", "unlearn")
