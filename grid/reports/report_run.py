"""The experiment's MLflow run 'report': what `unlearn-grid tables` and `figures` last wrote.

One run per experiment (tags stage=report, grid=NAME), reused by every call: `tables` replaces its
`tables/` artifact folder and its description (the markdown tables), `figures` its `figures/`
folder; neither touches the other's folder. Each call deletes the folder's old files first (a table
no longer written disappears), then logs the new ones, sets the tag `updated` and ends the run
FINISHED. Only MLflow's client is used here (no Ray, no fluent active run), on the tracking URI the
caller names.
"""
import contextlib
import datetime
import sys
from pathlib import Path

from mlflow.entities import RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from requests.exceptions import HTTPError

RUN_NAME = "report"
STAGE = "report"
NOTE_TAG = "mlflow.note.content"        # the run's description (markdown) on the MLflow run page
NOTE_LIMIT = 8000                       # MLflow's tag value limit (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)
TABLES, FIGURES = "tables", "figures"   # the run's artifact folders


def report_run(client, experiment_id, grid):
    """The experiment's report run, created when there is none. Older versions of `figures` made a
    new run (named 'figures', stage=report) per call: the newest is kept (it holds the latest
    figures) and renamed 'report', the others are deleted."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.stage = '{STAGE}'",
                              order_by=["attributes.start_time DESC"])
    if not runs:
        return client.create_run(experiment_id, run_name=RUN_NAME, tags={"stage": STAGE, "grid": grid})
    keep, *extra = runs
    for run in extra:
        client.delete_run(run.info.run_id)
    if keep.info.run_name != RUN_NAME:
        client.update_run(keep.info.run_id, name=RUN_NAME)
    if keep.data.tags.get("grid") != grid:
        client.set_tag(keep.info.run_id, "grid", grid)
    return keep


def clear_folder(client, run, folder):
    """Delete the run's artifacts under `folder`; True when they are gone. Artifact stores that cannot
    delete (MLflow's base repository silently does nothing, others raise) leave them: then one
    warning line says so and False is returned (the new files are logged beside the old ones).
    Local folders, S3, and a server's proxied `mlflow-artifacts:` store (HTTP DELETE; the server
    deletes in its own destination) can."""
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    try:
        repo.delete_artifacts(folder)
        left = repo.list_artifacts(folder)
        reason = f"{len(left)} still listed after deleting"
    except (NotImplementedError, MlflowException, HTTPError) as error:
        left, reason = True, " ".join([type(error).__name__ + ":"] + str(error).strip().splitlines()[:1])
    if left:
        print(f"warning: could not delete the old files of run '{RUN_NAME}' {folder}/ ({reason}); they stay, "
              f"and the new files are logged beside them", file=sys.stderr)
        return False
    return True


def tables_note(paths, limit=NOTE_LIMIT):
    """The run's description: each markdown table (`.md` among paths) under a `### name` heading,
    cut at a line boundary to fit `limit` characters, with a last line pointing at `tables/`."""
    sections = [f"### {Path(p).stem}\n\n{Path(p).read_text().strip()}\n" for p in paths if Path(p).suffix == ".md"]
    note = "\n".join(sections) if sections else "No tables were written.\n"
    if len(note) <= limit:
        return note
    tail = f"\n*… truncated to MLflow's {limit}-character limit: the rest is in the run's artifacts `{TABLES}/`.*\n"
    head = note[:limit - len(tail)]
    return head[:head.rfind("\n") + 1] + tail


def replace_folder(tracking_uri, experiment, folder, paths, tags=None):
    """Make the experiment's report run hold exactly `paths` under `folder` (other folders kept), set
    `tags` and `updated`, and end it FINISHED (FAILED when this raises). Returns the run id."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}")
    run = report_run(client, found.experiment_id, experiment)
    run_id = run.info.run_id
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    try:
        clear_folder(client, run, folder)
        for path in paths:
            client.log_artifact(run_id, str(path), folder)
        updated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in {**(tags or {}), "updated": updated}.items()])
    except BaseException:
        with contextlib.suppress(Exception):   # e.g. a server gone: the error that stopped the call is the one to see
            client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))
    return run_id


def log_tables(tracking_uri, experiment, paths):
    """`unlearn-grid tables`: the written tables (.csv/.md/.tex) become the report run's `tables/`,
    and its description the markdown tables. Returns the run id."""
    return replace_folder(tracking_uri, experiment, TABLES, paths, tags={NOTE_TAG: tables_note(paths)})


def log_figures(tracking_uri, experiment, paths):
    """`unlearn-grid figures`: the written PNGs become the report run's `figures/`. Returns the run id."""
    return replace_folder(tracking_uri, experiment, FIGURES, paths)
