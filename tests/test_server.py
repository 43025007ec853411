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
