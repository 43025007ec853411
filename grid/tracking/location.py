"""Where the tracking store and the storage are by default, and whether a tracking URI is a local
store: plain paths, no MLflow import (the CLI asks before it knows whether it needs MLflow)."""
from pathlib import Path

DEFAULT_ROOT = Path("unlearn-grid")     # relative to the working directory


def default_tracking_uri():
    return f"sqlite:///{(DEFAULT_ROOT / 'mlflow.db').resolve()}"


def default_storage():
    return str((DEFAULT_ROOT / "storage").resolve())


def is_local(tracking_uri):
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def local_store_path(tracking_uri):
    """The file or folder a local tracking URI points at (sqlite:///PATH, file://PATH, PATH); None for a server."""
    for scheme in ("sqlite:///", "file://"):
        if tracking_uri.startswith(scheme):
            return Path(tracking_uri[len(scheme):])
    return Path(tracking_uri) if "://" not in tracking_uri else None
