"""Runs read straight from MLflow's SQL tables: the frame mlflow.search_runs returns, without its ORM.

mlflow.search_runs builds an ORM object for every run, tag, param and metric (some 65 per run of a
grid) and then a Run entity from each: over 20,000 runs that is ~55 s, while the SQL takes under a
second. Here the same tables are read with SQLAlchemy Core, using MLflow's own table definitions (a
schema change fails loudly instead of reading the wrong column), as long (run, key, value) rows that
pandas pivots into wide columns.

Two steps, so that `unlearn-grid server` can send the result over HTTP (grid/tracking/server_app.py):
- `read_columns`: {column: values}, times still in epoch milliseconds (what travels as JSON);
- `to_frame`: that dict as mlflow.search_runs' frame (same columns, values and dtypes).
`read_runs` is both at once.

Reading MLflow's tables directly skips the schema check MLflow's own store makes at startup
(SqlAlchemyStore's _verify_schema): `schema_is_current` makes it (once per engine), and the callers
read with SQL only when the database's alembic revision is the one this MLflow's table definitions
describe -- otherwise through MLflow, which answers with its own "out-of-date database schema" error
(run `mlflow db upgrade`) instead of rows read from columns that moved.
"""
import json
import threading

import numpy as np
import pandas as pd
from sqlalchemy import select

BASE_COLUMNS = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
TIME_COLUMNS = ("start_time", "end_time")
PREFIXES = ("metrics.", "params.", "tags.")    # mlflow.search_runs' column order after the base columns
ACTIVE = "active"                             # MLflow's lifecycle stage of runs and experiments not deleted
SERVER_ROUTE = "/unlearn-grid/v1/runs"        # grid/tracking/server_app.py serves read_columns there

_engines = {}
_engines_lock = threading.Lock()
_schema_current = {}                          # engine -> bool: its database's revision is this MLflow's


def is_database_uri(uri):
    """A tracking URI that is a database MLflow's SqlAlchemyStore reads (so can we)."""
    return str(uri).startswith(("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+"))


def sqlalchemy_uri(uri):
    """As grid/tracking/server.py backend_store_uri: bare postgresql:// means psycopg2 to SQLAlchemy, and the
    driver installed with this project is psycopg 3."""
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + uri[len("postgresql://"):]
    return uri


def engine(uri):
    """One SQLAlchemy engine per database URI (its connection pool is reused by every read)."""
    from mlflow.store.db.utils import create_sqlalchemy_engine   # MLflow's pool settings (MLFLOW_SQLALCHEMYSTORE_*)
    uri = sqlalchemy_uri(uri)
    with _engines_lock:
        if uri not in _engines:
            _engines[uri] = create_sqlalchemy_engine(uri)
        return _engines[uri]


def expected_revision():
    """The alembic revision of this MLflow's schema (the head of its migrations)."""
    from mlflow.store.db.utils import _get_latest_schema_revision
    return _get_latest_schema_revision()


def schema_revision(engine):
    """The database's alembic revision (alembic_version), None when it has none."""
    from mlflow.store.db.utils import _get_schema_version
    return _get_schema_version(engine)


def schema_is_current(engine):
    """Whether the engine's database has the schema this MLflow expects, asked once per engine: a
    migration while a process runs is `mlflow db upgrade` with the servers stopped (MLflow's own advice)."""
    with _engines_lock:
        known = _schema_current.get(engine)
    if known is None:
        known = schema_revision(engine) == expected_revision()
        with _engines_lock:
            _schema_current[engine] = known
    return known


def _tables():
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlParam, SqlRun, SqlTag
    return (SqlRun.__table__, SqlExperiment.__table__, SqlTag.__table__, SqlParam.__table__,
            SqlLatestMetric.__table__)


def _wanted_keys(columns):
    """{prefix: keys to read, or None for all of them} from column names like "tags.key"."""
    if columns is None:
        return {prefix: None for prefix in PREFIXES}
    return {prefix: {c[len(prefix):] for c in columns if c.startswith(prefix)} for prefix in PREFIXES}


def read_columns(engine, stage=None, statuses=("FINISHED",), experiment_ids=None, columns=None):
    """The columns of the runs that mlflow.search_runs(filter_string="tags.stage = '<stage>' and
    attributes.status IN <statuses>", experiment_ids=experiment_ids, or search_all_experiments=True when
    None) returns, in its row order, as {name: numpy array}: start_time/end_time in epoch ms (None when
    unset), metrics as floats (NaN when missing), anything else as objects (None when missing).
    stage/statuses None: any. columns: only these metrics./params./tags. columns (the base columns
    always come)."""
    runs, experiments, tags, params, metrics = _tables()
    chosen = [runs.c.lifecycle_stage == ACTIVE]        # search_runs' default view: active runs only
    if statuses is not None:
        chosen.append(runs.c.status.in_(list(statuses)))
    if experiment_ids is None:                       # search_all_experiments: the active experiments
        chosen.append(runs.c.experiment_id.in_(
            select(experiments.c.experiment_id).where(experiments.c.lifecycle_stage == ACTIVE)))
    else:                                            # named experiments: whatever their stage, as MLflow does
        chosen.append(runs.c.experiment_id.in_([int(e) for e in experiment_ids]))
    if stage is not None:
        chosen.append(runs.c.run_uuid.in_(select(tags.c.run_uuid).where(tags.c.key == "stage",
                                                                        tags.c.value == stage)))
    wanted = _wanted_keys(columns)
    with engine.connect() as connection:
        # MLflow's default order: latest start first, then run id
        base = _fetch(connection, select(runs.c.run_uuid, runs.c.experiment_id, runs.c.status, runs.c.artifact_uri,
                                         runs.c.start_time, runs.c.end_time)
                      .where(*chosen).order_by(runs.c.start_time.desc(), runs.c.run_uuid))
        out = {name: np.array([row[i] for row in base], dtype=object) for i, name in enumerate(BASE_COLUMNS)}
        out["experiment_id"] = np.array([str(e) for e in out["experiment_id"]], dtype=object)
        if not base:
            return out
        selected = select(runs.c.run_uuid).where(*chosen)
        for prefix, table in (("metrics.", metrics), ("params.", params), ("tags.", tags)):
            keys = wanted[prefix]
            if keys is not None and not keys:
                continue
            fields = [table.c.run_uuid, table.c.key, table.c.value] + ([table.c.is_nan] if table is metrics else [])
            query = select(*fields).where(table.c.run_uuid.in_(selected))
            if keys is not None:
                query = query.where(table.c.key.in_(sorted(keys)))
            rows = _fetch(connection, query)
            out.update(_pivot(rows, out["run_id"], prefix, is_metric=table is metrics))
    return out


def _fetch(connection, query):
    """The rows as the DBAPI's plain tuples: SQLAlchemy's Row objects would cost as much again as the
    fetch, and these columns need none of its conversions (strings and numbers; is_nan is cast below)."""
    result = connection.execute(query)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _pivot(rows, run_ids, prefix, is_metric):
    """Long (run, key, value[, is_nan]) rows as {prefix + key: one value per run of run_ids}. A run
    that finished after the base read (and so is not in run_ids) is left out."""
    if not rows:
        return {}
    names = ["run_uuid", "key", "value"] + (["is_nan"] if is_metric else [])
    long = pd.DataFrame(rows, columns=names)
    if is_metric:   # MLflow stores NaN as is_nan (the value column is NOT NULL); it reads back as NaN
        long["value"] = np.where(long["is_nan"].astype(bool), np.nan, long["value"].astype(float))
    wide = long.pivot(index="run_uuid", columns="key", values="value").reindex(run_ids)
    out = {}
    for key in wide.columns:                         # pivot sorts the keys
        if is_metric:
            out[prefix + key] = wide[key].to_numpy(dtype=float)
        else:
            values = wide[key].to_numpy(dtype=object)
            values[pd.isna(values)] = None
            out[prefix + key] = values
    return out


def _times(millis):
    """Epoch ms (None when unset) as mlflow.search_runs gives them: UTC timestamps, NaT when unset.
    Floats hold these integers exactly (< 2**53 ms); a column of only NaT is what MLflow's per-run
    conversion gives for runs without an end (naive, not UTC)."""
    millis = pd.Series(millis, dtype="float64")
    if millis.isna().all():
        return [pd.NaT] * len(millis)
    return pd.to_datetime(millis, unit="ms", utc=True)


def to_frame(columns):
    """read_columns' dict (or its JSON) as mlflow.search_runs' frame: pandas infers each column's dtype
    from the values as it does from MLflow's lists."""
    if not len(columns.get("run_id", [])):
        return pd.DataFrame({name: [] for name in BASE_COLUMNS})   # MLflow's frame for no runs
    data = {}
    for name, values in columns.items():
        if name in TIME_COLUMNS:
            data[name] = _times(values)
        elif name.startswith("metrics."):
            data[name] = np.asarray(values, dtype=float)           # JSON null -> NaN
        else:
            data[name] = values
    return pd.DataFrame(data)


def read_runs(engine, stage=None, statuses=("FINISHED",), experiment_ids=None, columns=None):
    """mlflow.search_runs' frame of these runs (see read_columns)."""
    return to_frame(read_columns(engine, stage, statuses, experiment_ids, columns))


def to_json(columns):
    """read_columns' dict as compact column-oriented JSON (bytes): NaN metrics as null (JSON has no NaN)."""
    plain = {}
    for name, values in columns.items():
        if name.startswith("metrics."):
            values = np.where(np.isnan(values), None, values)
        plain[name] = values.tolist()
    return json.dumps(plain, separators=(",", ":")).encode()
