"""`unlearn-grid server`: what it refuses, before starting anything (the happy path: test_multinode.py)."""

import pytest

from grid import cli
from grid.tracking import server
from services import free_port


def test_bare_postgresql_uri_gets_the_installed_driver():
    # SQLAlchemy reads bare postgresql:// as psycopg2, which is not installed; psycopg 3 is
    assert server.backend_store_uri("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert server.backend_store_uri("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_the_server_is_mlflow_with_this_projects_app():
    line = server.command("sqlite:////tmp/m.db", "/tmp/artifacts")
    assert line[line.index("--app-name") + 1] == "unlearn-grid"   # grid/tracking/server_app.py (tests/test_run_table.py)
    server.check_app()   # pyproject.toml's "mlflow.app" entry point is installed (else: reinstall the project)


@pytest.mark.parametrize("args, message", [
    (["--backend-store-uri", "mysql://u@h/db"], "--backend-store-uri must start with one of"),
    (["--host", "0.0.0.0"], "--host '0.0.0.0' would expose the tracking server on every interface"),
    (["--host", "::"], "bind 127.0.0.1"),
])
def test_refused_before_anything_starts(args, message, tmp_path, capsys):
    base = {"--backend-store-uri": "sqlite:///" + str(tmp_path / "m.db"), "--artifacts-destination": str(tmp_path / "a")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    assert cli.main(["server", *[part for pair in base.items() for part in pair]]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []          # no store, no artifacts folder


def test_unreachable_postgresql_is_one_clear_line(tmp_path, capsys):
    port = free_port()                              # nothing listens there
    assert cli.main(["server", "--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{port}/mlflow",
                     "--artifacts-destination", str(tmp_path / "artifacts")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}/mlflow:") and err.count("\n") == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", ""])
def test_the_ui_refuses_every_interface_in_one_line(host, tmp_path, capsys):
    # the UI is the same MLflow server without authentication: refused before any store is created
    assert cli.main(["ui", "--host", host, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --host {host!r} would expose") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_password_in_the_backend_uri_is_warned_about_masked(capsys):
    assert server.warn_password("postgresql://mlflow:hunter2@db:5432/mlflow")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "~/.pgpass" in err and "PGPASSFILE" in err
    assert "hunter2" not in err and "mlflow:***@db" in err
    assert not server.warn_password("postgresql://mlflow@db:5432/mlflow")   # libpq's pgpass: nothing to say
    assert capsys.readouterr().err == ""


def test_the_help_never_suggests_a_password_in_the_uri():
    assert "PASSWORD@" not in cli.parser()._subparsers._group_actions[0].choices["server"].format_help()
    assert "PASSWORD@" not in server.__doc__
