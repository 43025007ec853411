"""grid/reports/report_run.py: the one MLflow run 'report' per experiment that `unlearn-grid tables` and
`figures` replace their artifact folders of, on a sqlite store with local artifacts (no Ray; ~10 s
on 2 cores, most of it creating the store)."""
import datetime
from pathlib import Path

import mlflow
import pytest
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.tracking import MlflowClient

from grid.reports import report_run
from grid.tracking import mlflow_runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite tracking URI (artifacts in a folder beside it), shared by the tests: each uses its own experiment."""
    folder = tmp_path_factory.mktemp("report-store")
    return f"sqlite:///{folder / 'mlflow.db'}"


def experiment(store, name):
    return mlflow_runs.ensure_experiment(store, name)


def write(folder, files):
    """Write {name: text} into folder; returns the paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths


def tables(folder, names, row="| a | 1 |"):
    """name.csv|md|tex per name, as report.write_tables writes them."""
    files = {}
    for name in names:
        files.update({f"{name}.csv": f"a,{name}\n", f"{name}.md": f"| {name} | x |\n|---|---|\n{row}\n",
                      f"{name}.tex": f"\\begin{{tabular}}{name}\\end{{tabular}}\n"})
    return write(folder, files)


def report_runs(client, experiment_id):
    return client.search_runs([experiment_id], filter_string="tags.stage = 'report'")


def logged(client, run_id, folder):
    return sorted(info.path for info in client.list_artifacts(run_id, folder))


def test_tables_and_figures_share_one_run_and_replace_only_their_own_folder(store, tmp_path):
    client = MlflowClient(store)
    experiment_id = experiment(store, "shared")
    other_id = experiment(store, "other")
    first = report_run.log_tables(store, "shared", tables(tmp_path / "t1", ["accuracy", "mia_nn"]))
    figures = write(tmp_path / "f1", {"running_time.png": "png 1", "lambda_trw.png": "png 2"})
    assert report_run.log_figures(store, "shared", figures) == first
    # the second tables call no longer writes mia_nn, and accuracy changed
    second_tables = tables(tmp_path / "t2", ["accuracy"], row="| b | 2 |")
    assert report_run.log_tables(store, "shared", second_tables) == first
    assert report_run.log_tables(store, "other", tables(tmp_path / "t3", ["search"])) != first

    runs = report_runs(client, experiment_id)
    assert [r.info.run_id for r in runs] == [first]                 # not one run per call
    run = runs[0]
    assert run.info.run_name == "report" and run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "report" and run.data.tags["grid"] == "shared"
    updated = datetime.datetime.fromisoformat(run.data.tags["updated"])
    assert abs(datetime.datetime.now(datetime.timezone.utc) - updated) < datetime.timedelta(minutes=5)
    # stale files gone, the tables' new content logged, the figures logged before still there
    assert logged(client, first, "tables") == ["tables/accuracy.csv", "tables/accuracy.md", "tables/accuracy.tex"]
    downloaded = mlflow.artifacts.download_artifacts(run_id=first, artifact_path="tables/accuracy.md",
                                                     dst_path=str(tmp_path / "down"), tracking_uri=store)
    assert Path(downloaded).read_text() == (tmp_path / "t2" / "accuracy.md").read_text()
    assert logged(client, first, "figures") == ["figures/lambda_trw.png", "figures/running_time.png"]
    # the description: the last call's markdown tables only
    note = run.data.tags[report_run.NOTE_TAG]
    assert note.startswith("### accuracy\n") and "| b | 2 |" in note
    assert "mia_nn" not in note and "| a | 1 |" not in note
    # another experiment has its own run, untouched by this one's calls
    other = report_runs(client, other_id)
    assert len(other) == 1 and other[0].info.run_id != first and other[0].data.tags["grid"] == "other"
    assert logged(client, other[0].info.run_id, "figures") == []

    # figures again, with one figure fewer: figures/ replaced, tables/ kept
    assert report_run.log_figures(store, "shared", figures[:1]) == first
    assert logged(client, first, "figures") == ["figures/running_time.png"]
    assert logged(client, first, "tables") == ["tables/accuracy.csv", "tables/accuracy.md", "tables/accuracy.tex"]
    assert client.get_run(first).data.tags[report_run.NOTE_TAG] == note   # figures leave the description


def test_report_runs_of_older_versions_become_one(store, tmp_path):
    """Older `figures` made a new run 'figures' (stage=report) per call: the newest is kept, renamed."""
    client = MlflowClient(store)
    experiment_id = experiment(store, "older")
    old = []
    for start in (1_000, 3_000, 2_000):
        run = client.create_run(experiment_id, start_time=start, run_name="figures",
                                tags={"stage": "report", "grid": "older"})
        client.log_artifact(run.info.run_id, str(write(tmp_path / str(start), {f"f{start}.png": "png"})[0]),
                            "figures")
        client.set_terminated(run.info.run_id)
        old.append(run.info.run_id)
    newest = old[1]
    assert report_run.log_tables(store, "older", tables(tmp_path / "t", ["accuracy"])) == newest
    runs = report_runs(client, experiment_id)
    assert [r.info.run_id for r in runs] == [newest] and runs[0].info.run_name == "report"
    assert {client.get_run(run_id).info.lifecycle_stage for run_id in old} == {"active", "deleted"}
    assert client.get_run(newest).info.lifecycle_stage == "active"
    assert logged(client, newest, "figures") == ["figures/f3000.png"]     # its figures kept


def test_description_is_cut_to_mlflows_tag_limit(store, tmp_path):
    rows = "\n".join(f"| row {i} | {'x' * 40} |" for i in range(100))     # ~5,300 characters per table
    paths = write(tmp_path, {"accuracy.md": rows, "accuracy.csv": "a\n", "mia_nn.md": rows})
    note = report_run.tables_note(paths)
    assert len(note) <= report_run.NOTE_LIMIT
    assert note.startswith("### accuracy\n\n| row 0 |") and "### mia_nn" in note
    body, tail = note.rstrip("\n").rsplit("\n", 1)
    assert "the rest is in the run's artifacts `tables/`" in tail
    # cut at a line boundary: every table line kept is whole
    assert all(line in rows or line.startswith("### ") or line == "" for line in body.split("\n"))
    assert len(note) > report_run.NOTE_LIMIT - 100                      # the room is used
    # stored as is (MLflow would otherwise cut it silently, without the last line)
    experiment(store, "long")
    run_id = report_run.log_tables(store, "long", paths)
    assert MlflowClient(store).get_run(run_id).data.tags[report_run.NOTE_TAG] == note
    short = report_run.tables_note(paths[:2])
    assert short == f"### accuracy\n\n{rows}\n" and "rest is in" not in short


class NoDelete(LocalArtifactRepository):
    delete_artifacts = ArtifactRepository.delete_artifacts       # MLflow's base repository: does nothing


class RaisesOnDelete(LocalArtifactRepository):
    def delete_artifacts(self, artifact_path=None):
        raise NotImplementedError("This artifact repository does not support deleting artifacts")


@pytest.mark.parametrize("repository", [NoDelete, RaisesOnDelete])
def test_a_store_that_cannot_delete_warns_and_logs_beside(store, tmp_path, monkeypatch, capsys, repository):
    client = MlflowClient(store)
    name = f"nodelete-{repository.__name__}"
    experiment(store, name)
    run_id = report_run.log_tables(store, name, tables(tmp_path / "t1", ["accuracy", "mia_nn"]))
    capsys.readouterr()
    monkeypatch.setattr(report_run, "get_artifact_repository", lambda uri, tracking_uri=None: repository(uri))
    assert report_run.log_tables(store, name, tables(tmp_path / "t2", ["accuracy"])) == run_id
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: could not delete the old files of run 'report' tables/")
    assert "they stay" in warning[0]
    assert len(logged(client, run_id, "tables")) == 6                   # old beside new
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_failed_call_leaves_the_run_failed(store, tmp_path):
    client = MlflowClient(store)
    experiment(store, "failing")
    run_id = report_run.log_figures(store, "failing", write(tmp_path, {"a.png": "png"}))
    with pytest.raises(Exception):
        report_run.log_figures(store, "failing", [tmp_path / "missing.png"])
    assert client.get_run(run_id).info.status == "FAILED"
    assert report_run.log_figures(store, "failing", [tmp_path / "a.png"]) == run_id    # the next call mends it
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(LookupError, match="no experiment 'nope'"):
        report_run.log_figures(store, "nope", [])
