"""trainables/uris.py: what every print of a tracking or storage URI shows, and what a run records
of a storage URI (secrets masked / dropped, everything else unchanged); and `run` prints it masked."""
import pytest

from grid import cli
from services import free_port
from trainables import uris

SECRET_S3 = "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&access_key=AKIA1&secret_key=S3CR3T&session_token=T0K3N"


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://mlflow:hunter2@db:5432/mlflow?sslmode=require", "postgresql://mlflow:***@db:5432/mlflow?sslmode=require"),
    ("http://alice:pw@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    (SECRET_S3, "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&access_key=***&secret_key=***&session_token=***"),
    ("gs://bucket/p?access_token=ya29", "gs://bucket/p?access_token=***"),
    # nothing secret: unchanged, character for character
    ("sqlite:////tmp/m.db", "sqlite:////tmp/m.db"),
    ("postgresql://mlflow@db/mlflow", "postgresql://mlflow@db/mlflow"),
    ("s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&region=us-east-1",
     "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&region=us-east-1"),
    ("/home/me/unlearn-grid/storage", "/home/me/unlearn-grid/storage"),
    ("--port", "--port"),
])
def test_masked_hides_passwords_and_secret_options_only(uri, shown):
    assert uris.masked(uri) == shown


def test_without_secrets_keeps_what_reaches_the_same_bucket():
    assert uris.without_secrets(SECRET_S3) == "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000"
    assert uris.without_secrets("postgresql://mlflow:pw@db/mlflow") == "postgresql://mlflow@db/mlflow"
    assert uris.without_secrets("/a/folder") == "/a/folder"
    assert uris.has_password("postgresql://mlflow:pw@db/mlflow") and not uris.has_password("postgresql://mlflow@db/m")


def test_run_prints_its_uris_masked(capsys):
    # nothing listens there: `run` prints where it tracks and stores, then fails in one line, before Ray starts
    tracking = f"http://alice:hunter2@127.0.0.1:{free_port()}"
    assert cli.main(["run", "toy", "--tracking-uri", tracking, "--storage", SECRET_S3]) == 1
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "alice:***@127.0.0.1" in shown and "secret_key=***" in shown
    for secret in ("hunter2", "AKIA1", "S3CR3T", "T0K3N"):
        assert secret not in shown
