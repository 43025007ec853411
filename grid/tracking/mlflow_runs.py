"""MLflow on the driver: the experiment, which keys are finished, runs as a frame (where the store is by
default: grid/tracking/location.py)."""
import contextlib
import fcntl
import os

import mlflow
import pandas as pd

from grid.tracking import run_table
from grid.tracking.location import local_store_path
from trainables import store, tracking_http

# MLflow's experiment kind: a model-training experiment, not a GenAI one (the UI would otherwise infer
# a kind and store its guess). MLflow 3.17's UI decides its landing page by the URL's workflowType
# instead: grid/tracking/ui.py's addresses carry it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# Answers of the run-table route that mean "ask MLflow's own search instead", not an error:
# 404: a plain `mlflow server`, a store it cannot read with SQL, a schema that is not this MLflow's;
# 401/403: an auth proxy or `mlflow server --app-name basic-auth` in front that does not know the route
# (MLflow's search goes through the same credentials and gets the permission checks MLflow makes);
# 405: a proxy that allows only MLflow's own methods on unknown paths.
FALL_BACK_ON = (401, 403, 404, 405)


@contextlib.contextmanager
def first_contact(tracking_uri):
    """A local SQLite store: MLflow creates and migrates a new database's tables when a process first
    opens it, and two drivers doing that at once fail ("duplicate column name"); hold an exclusive
    lock on the database's folder meanwhile (flock on the folder itself: no lock file is left)."""
    path = local_store_path(tracking_uri) if tracking_uri.startswith("sqlite:///") else None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)   # closing releases the lock


def ensure_experiment(tracking_uri, name):
    """Experiment id for `name`, created on the driver before any trial (artifacts beside a local store)."""
    mlflow.set_tracking_uri(tracking_uri)
    with first_contact(tracking_uri):
        experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        # trials run in Ray's trial folders: a relative default artifact root would scatter artifacts
        root = local_store_path(tracking_uri).parent
        artifact_location = (root / "artifacts" / name).resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:
        experiment = mlflow.get_experiment_by_name(name)   # a concurrent driver created it first
        if experiment is None:
            raise
        return experiment.experiment_id


def finished_runs(tracking_uri, stage, experiment_id=None, columns=None):
    """Finished runs of a stage (tags, params, metrics columns); all experiments unless one is named.
    One run per key and experiment, the first finished: leases (grid/execution/leases.py) keep concurrent drivers
    from running a key twice, and a second run of a key (a driver older than leases) is not a result.
    columns: only these tags./params./metrics. columns (e.g. ["tags.key"]); None: all of them."""
    mlflow.set_tracking_uri(tracking_uri)   # as before: later mlflow.* calls of callers rely on it
    frame = read_runs(tracking_uri, stage, ("FINISHED",), experiment_id,
                      columns=None if columns is None else sorted({*columns, "tags.key"}))   # the dedupe's key
    if not len(frame):
        return pd.DataFrame(columns=["run_id", "tags.key"])
    if "tags.key" in frame:
        keyed = frame[frame["tags.key"].notna()].sort_values(["end_time", "run_id"])
        second = keyed.index[keyed.duplicated(["experiment_id", "tags.key"])]
        frame = frame.drop(index=second).reset_index(drop=True)   # MLflow's order otherwise
    return frame


def read_runs(tracking_uri, stage, statuses, experiment_id=None, columns=None):
    """mlflow.search_runs' frame of a stage's runs in `statuses` (all experiments unless one is named),
    read the fastest way the tracking URI allows: mlflow.search_runs builds an ORM object per run, tag,
    param and metric (~55 s for 20,000 runs), so a database is read with SQL (grid/tracking/run_table.py) and
    `unlearn-grid server` is asked for the same (grid/tracking/server_app.py); a plain `mlflow server` and file
    stores go through mlflow.search_runs. columns: as finished_runs."""
    experiment_ids = [experiment_id] if experiment_id else None
    if run_table.is_database_uri(tracking_uri):
        path = local_store_path(tracking_uri) if tracking_uri.startswith("sqlite:///") else None
        if path is not None and not path.exists():     # no store yet, so no runs (and none is created)
            return run_table.to_frame({})
        engine = run_table.engine(tracking_uri)
        if run_table.schema_is_current(engine):   # else MLflow's search, and its "out-of-date schema" error
            return run_table.read_runs(engine, stage, statuses, experiment_ids, columns)
        return _runs_from_mlflow(tracking_uri, stage, statuses, experiment_ids, columns)
    if tracking_http.is_http(tracking_uri):
        frame = _runs_from_server(tracking_uri, stage, statuses, experiment_ids, columns)
        if frame is not None:
            return frame
    return _runs_from_mlflow(tracking_uri, stage, statuses, experiment_ids, columns)


def _runs_from_server(tracking_uri, stage, statuses, experiment_ids, columns):
    """The frame from `unlearn-grid server`'s run-table route; None when the server does not have it
    or will not serve it (FALL_BACK_ON): then MLflow's own search reads the runs. MLflow's own HTTP client
    makes the request: its credentials, TLS settings, timeouts and retries (MLFLOW_HTTP_REQUEST_*,
    which a grid's driver bounds: trainables/tracking_http.py) are the same as every MLflow request's."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request
    query = {"stage": stage, "status": ",".join(statuses)}
    if experiment_ids is not None:
        query["experiment_id"] = ",".join(map(str, experiment_ids))
    if columns is not None:
        query["columns"] = ",".join(columns)
    response = http_request(get_default_host_creds(tracking_uri), run_table.SERVER_ROUTE, "GET", params=query)
    if response.status_code in FALL_BACK_ON:
        return None
    if response.status_code != 200:
        raise MlflowException(f"{tracking_uri}{run_table.SERVER_ROUTE} answered HTTP {response.status_code}: "
                              f"{response.text[:300]}")
    return run_table.to_frame(response.json())


def _runs_from_mlflow(tracking_uri, stage, statuses, experiment_ids, columns):
    """mlflow.search_runs. Its filters take one status (`IN` only for run ids): with several, every run
    of the stage is read and the others dropped, so columns that only those others have stay, empty."""
    mlflow.set_tracking_uri(tracking_uri)
    scope = {"experiment_ids": experiment_ids} if experiment_ids else {"search_all_experiments": True}
    status = f" and attributes.status = '{statuses[0]}'" if len(statuses) == 1 else ""
    frame = mlflow.search_runs(filter_string=f"tags.stage = '{stage}'{status}", max_results=100_000, **scope)
    if len(statuses) > 1 and len(frame):
        frame = frame[frame["status"].isin(statuses)].reset_index(drop=True)
    if columns is not None:   # the same columns as the other paths give
        frame = frame[[c for c in frame.columns if c in run_table.BASE_COLUMNS or c in columns]]
    return frame


def finished_keys(tracking_uri, stage, experiment_id=None):
    frame = finished_runs(tracking_uri, stage, experiment_id, columns=["tags.key"])   # deciding what is pending
    return set(frame["tags.key"].dropna()) if "tags.key" in frame else set()


def pending(trials, stage, tracking_uri, experiment_id, storage):
    """Trials of a stage that still need to run. Originals and Retrain models are shared by every grid:
    done when any experiment has a finished run and storage has their weights. Unlearn and U-LiRA
    results belong to their grid's experiment (experiment_id None: it does not exist yet, none done)."""
    if not trials:
        return []
    if stage in ("unlearn", "ulira"):
        done = finished_keys(tracking_uri, stage, experiment_id) if experiment_id is not None else set()
        return [t for t in trials if t["key"] not in done]
    done = finished_keys(tracking_uri, stage)
    # the run is the trial key's; the weights are stored under its model key (trainables/keys.py)
    return [t for t in trials if t["key"] not in done or not store.has_model(storage, t.get("model_key", t["key"]))]


def _tidy(frame):
    """Strip MLflow's tags./params./metrics. prefixes (tags win over params of the same name)."""
    out = pd.DataFrame(index=frame.index)
    for prefix in ("metrics.", "params.", "tags."):
        for column in frame.columns:
            if column.startswith(prefix):
                out[column[len(prefix):]] = frame[column]
    out["run_id"] = frame["run_id"]
    return out


BANK_ROLE = "ulira_bank"   # grid/plan/config.py BANK_ROLE (not imported: config imports torch)


def without_bank(runs):
    """The runs that are not U-LiRA bank models (role ulira_bank, grid/plan/config.py add_bank_trials): the
    bank's Originals, Retrain models and unlearn trials exist for U-LiRA only and stay out of the tables."""
    if "role" not in runs:
        return runs
    return runs[runs["role"] != BANK_ROLE].reset_index(drop=True)


def experiment_runs(tracking_uri, experiment):
    """Tidy frame of an experiment's finished retrain/unlearn runs, with the Retrain runs it references
    pulled in from other experiments (Retrain models are shared between grids). U-LiRA bank runs are
    left out (without_bank)."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}; experiments: {names}")
    unlearn = without_bank(_tidy(finished_runs(tracking_uri, "unlearn", found.experiment_id)))
    retrain = without_bank(_tidy(finished_runs(tracking_uri, "retrain")))
    if len(unlearn) and "retrain_keys" in unlearn:
        wanted = {k for keys in unlearn["retrain_keys"].dropna() for k in keys.split(",")}
        retrain = retrain[retrain["key"].isin(wanted)].drop_duplicates("key")
    else:
        retrain = retrain.iloc[0:0]
    return pd.concat([retrain, unlearn], ignore_index=True)


def experiment_ulira_runs(tracking_uri, experiment):
    """Tidy frame of an experiment's finished U-LiRA runs (empty when the grid had none)."""
    found = mlflow.get_experiment_by_name(experiment)
    return _tidy(finished_runs(tracking_uri, "ulira", found.experiment_id))


SEARCH_COLUMNS = ["run_id", "key", "dataset", "arch", "forget_classes", "method", "seed"]


def search_runs(tracking_uri, experiment):
    """(parents, children): tidy frames of an experiment's hyperparameter searches. parents: one
    finished run per searched cell (stage=search); children: their trials (stage=search_trial),
    finished or stopped early by ASHA (KILLED, tagged stopped_early: their last objective is still a result). Empty frames
    (with the identifying columns) when the experiment has no searches."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}; experiments: {names}")

    def stage_runs(stage, statuses, metrics_win=False):
        frame = read_runs(tracking_uri, stage, statuses, found.experiment_id)
        if frame.empty:
            return pd.DataFrame(columns=SEARCH_COLUMNS + ["status"])
        tidy = _tidy(frame)
        if metrics_win:
            # a trial's metrics win over its params: the flat trial config may name the objective
            # ('objective' = 'retrain_gap') where the metric `objective` is the value we plot
            for column in frame.columns:
                if column.startswith("metrics."):
                    tidy[column[len("metrics."):]] = frame[column]
        tidy["status"] = frame["status"]
        return tidy

    # metrics win on the parents too: the best_objective tag of older runs is rounded to 4 decimals, its
    # metric is not (search.csv keeps full precision)
    parents = stage_runs("search", ["FINISHED"], metrics_win=True)
    children = stage_runs("search_trial", ["FINISHED", "KILLED"], metrics_win=True)
    # KILLED by an interrupted driver (not by ASHA, which tags stopped_early): no result. Without the
    # column no trial was stopped early (only FINISHED and KILLED runs are read, so no other run adds it)
    stopped_early = children["stopped_early"] == "true" if "stopped_early" in children else False
    children = children[(children["status"] == "FINISHED") | stopped_early]
    return parents, children.reset_index(drop=True)
