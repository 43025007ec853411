"""`unlearn-grid`: run, validate, tables, ui.

    unlearn-grid run demo                 # bundled digits grid, ~1-2 min on 2 CPU cores
    unlearn-grid tables demo --out tables # every table the runs support (.csv, .md, .tex)
    unlearn-grid figures demo --out figs  # PNG figures
    # both also log what they write to the experiment's one MLflow run 'report' (grid/reports/report_run.py)
    unlearn-grid ui [EXPERIMENT]          # MLflow UI on the local store; prints each experiment's runs address
    unlearn-grid best search-trw --out trw-best.yaml   # a search grid's best params as a grid to run
    unlearn-grid server --backend-store-uri postgresql://USER@HOST/DB --artifacts-destination DIR|s3://…   # for a cluster
    unlearn-grid stage-data mnist --from ./unlearn-grid/data --to s3://BUCKET/data   # datasets for a cluster
    unlearn-grid tracking-db backup --db postgresql://mlflow@HOST/mlflow --out mlflow.dump   # and `restore`
"""
import argparse
import dataclasses
import os
import sys
import time

# Only what every command needs is imported here: torch, MLflow, Ray and scikit-learn are imported by
# the commands that use them, so `--help` and `validate` answer at once (bench/cli_time.py).
from grid.plan import config
from grid.tracking import location
from trainables import plugins, uris


def _add_store_options(parser, storage=True):
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite store ./unlearn-grid/mlflow.db; "
                             "an http:// server works the same)")
    if storage:
        parser.add_argument("--storage", default=None,
                            help="folder for model weights, logits and Ray results, shared by all nodes "
                                 "(default: ./unlearn-grid/storage)")


def _add_data_root_option(parser):
    parser.add_argument("--data-root", default=None, metavar="ROOT_OR_URI",
                        help="replaces the grid's data.root: a folder, or a bucket the datasets are staged in "
                             "(`unlearn-grid stage-data`); not part of trial keys, so finished trials stay cached")


def _check_bucket_data(plan):
    """The datasets and weights a grid reads from a bucket are staged there (DataUnavailable otherwise).
    Only a bucket: it looks the same from every machine, while `validate` may answer on a machine
    without the local files (`run` checks a local data root, on the driver)."""
    root, weights = plan.grid["data"]["root"], plan.grid["data"]["weights"]
    if not (config.is_uri(root) or config.is_uri(weights)):
        return
    # pyarrow: imported only for a grid that reads a bucket
    from trainables import data_cache
    if config.is_uri(root):
        for dataset in plan.grid["datasets"]:
            data_cache.check_available(dataset, root)
    if config.is_uri(weights):
        data_cache.check_file_available(weights)


def cmd_validate(args):
    """Validate, count trials and print the cost report; schedules nothing, never starts Ray, writes nothing."""
    from grid.plan import cost, shapes
    plan = config.load(args.grid, data_root=args.data_root)
    try:
        _check_bucket_data(plan)
    except FileNotFoundError as error:   # data_cache.DataUnavailable: one line saying how to stage it
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.gpus is not None and args.gpus < 1:
        print(f"error: --gpus must be a whole number >= 1, got {args.gpus}", file=sys.stderr)
        return 2
    if args.gpus is not None and args.cluster:
        print("error: --gpus and --cluster both set the wall-clock's GPUs: give one", file=sys.stderr)
        return 2
    cluster = capacity = None
    if args.cluster:
        try:
            cluster = shapes.load(args.cluster)
        except shapes.ClusterFileError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        capacity = shapes.capacity(plan.grid["resources"], cluster)
    try:
        throughput = cost.load_throughput(args.throughput) if args.throughput else cost.Throughput()
    except cost.ThroughputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"grid {plan.name!r} is valid: {len(plan.original)} original, {len(plan.retrain)} retrain, "
          f"{len(plan.unlearn)} unlearn trials" + (f", {len(plan.ulira)} U-LiRA attacks" if plan.ulira else "")
          + (f", {len(plan.search)} search cells × {plan.grid['search']['samples']} trials" if plan.search else "")
          + "; schedules nothing")
    tracking_uri = args.tracking_uri or location.default_tracking_uri()
    storage = args.storage or location.default_storage()
    # What a run would skip, decided as `run` decides it (mlflow_runs.pending). A store that does not
    # exist yet is not created: validate writes nothing.
    done = {}
    local_path = location.local_store_path(tracking_uri)
    if local_path is not None and not local_path.exists():
        note = f"tracking {uris.masked(tracking_uri)}: no store yet, nothing cached; storage {uris.masked(storage)}"
    else:
        import mlflow

        from grid.tracking import mlflow_runs
        try:
            mlflow.set_tracking_uri(tracking_uri)
            experiment = mlflow.get_experiment_by_name(plan.name)
            experiment_id = experiment.experiment_id if experiment is not None else None
            for stage, trials in {**plan.stages(), "ulira": plan.ulira}.items():
                todo = {t["key"] for t in mlflow_runs.pending(trials, stage, tracking_uri, experiment_id, storage)}
                done[stage] = {t["key"] for t in trials} - todo
            if plan.search and experiment_id is not None:
                done["search"] = mlflow_runs.finished_keys(tracking_uri, "search", experiment_id)
            note = f"tracking {uris.masked(tracking_uri)}, storage {uris.masked(storage)}"
        except Exception as error:   # an unreachable server: still report the grid's full cost
            done = {}
            reason = str(error).replace(tracking_uri, uris.masked(tracking_uri))
            note = f"tracking {uris.masked(tracking_uri)}: could not be read ({type(error).__name__}: {reason}); counting nothing cached"
    estimate = cost.estimate(plan, throughput, cached_keys=done.get("original", set()) | done.get("retrain", set()),
                             finished_unlearn_keys=done.get("unlearn", set()),
                             finished_ulira_keys=done.get("ulira", set()),
                             finished_search_keys=done.get("search", set()))
    if cluster is not None:
        print(shapes.format_report(plan.grid["resources"], cluster))
    print(cost.format_report(estimate, gpus=args.gpus or 1, store_note=note, cluster=cluster,
                             cluster_capacity=capacity))
    return 0


def _use_cluster_file(args, plan):
    """The cluster-launcher file of `run` (--cluster, else $UNLEARN_GRID_CLUSTER), checked now and left in
    $UNLEARN_GRID_CLUSTER for the pack sizes (grid/execution/capacity.py); False after a one-line error.
    A fresh local Ray instance never grows: there the variable is dropped (--cluster is an error)."""
    from grid.plan import shapes
    if args.address in (None, "local"):
        if args.cluster:
            print("error: --cluster needs --address: a fresh local Ray instance never grows to a cluster's "
                  "node types", file=sys.stderr)
            return False
        os.environ.pop(shapes.ENV_CLUSTER, None)
        return True
    path = args.cluster or os.environ.get(shapes.ENV_CLUSTER)
    if not path:
        return True
    try:
        cluster = shapes.load(path)
    except shapes.ClusterFileError as error:
        print(f"error: {error}" + ("" if args.cluster else f" (from ${shapes.ENV_CLUSTER})"), file=sys.stderr)
        return False
    cap = shapes.capacity(plan.grid["resources"], cluster)
    for line in shapes.warnings(plan.grid["resources"], cluster):
        if not cap.slots:
            print(f"error: {line}", file=sys.stderr)
            return False
        print(f"warning: {line}")
    print(f"cluster {cluster.source}: at most {cap.slots} trials of {shapes.describe(plan.grid['resources'])} "
          f"at once; packs are sized for that")
    os.environ[shapes.ENV_CLUSTER] = str(cluster.source)
    return True


def cmd_run(args):
    plan = config.load(args.grid, data_root=args.data_root)   # validates everything before anything is written
    if not _use_cluster_file(args, plan):
        return 2
    from mlflow.exceptions import MlflowException

    from grid.execution.faults import StageFailed
    from grid.execution.stages import run_grid   # Ray is imported only when a grid actually runs
    from trainables import data_cache, tracking_http
    tracking_uri = args.tracking_uri or location.default_tracking_uri()
    storage = args.storage or location.default_storage()
    print(f"grid {plan.name!r}: tracking {uris.masked(tracking_uri)}, storage {uris.masked(storage)}")
    started = time.perf_counter()
    import ray
    own_ray = not ray.is_initialized()   # a Ray this command starts (not a caller's: tests, notebooks)
    try:
        counts = run_grid(plan, tracking_uri, storage, address=args.address)
    except data_cache.DataUnavailable as error:   # data the workers could not read: found before anything is written
        _stop_ray(own_ray)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ConnectionError, StageFailed) as error:   # a cluster or tracking server that is gone; failed trials
        _stop_ray(own_ray)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MlflowException:   # the driver's own request, after its bounded retries: an outage is one line
        reason = tracking_http.probe(tracking_uri)
        if reason is None:
            raise
        _stop_ray(own_ray)
        print(f"error: the MLflow tracking server {uris.masked(tracking_uri)} stopped answering ({reason}); run the same "
              f"`unlearn-grid run` again once it answers (finished trials are not run again)", file=sys.stderr)
        return 1
    print(f"grid {plan.name!r} done in {time.perf_counter() - started:.1f}s: "
          + ", ".join(f"{n} {stage}" for stage, n in counts.items()) + " trials run")
    from grid.tracking import mlflow_runs, ui
    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, plan.name)
    if location.is_local(tracking_uri):
        print(f"MLflow UI: unlearn-grid ui {plan.name} --tracking-uri {uris.masked(tracking_uri)}   (then open "
              f"{ui.runs_address('http://127.0.0.1:5000', experiment_id)})")
    else:
        print(f"MLflow UI: {uris.masked(ui.runs_address(tracking_uri, experiment_id))}")
    return 0


def _stop_ray(own_ray):
    """Shut the Ray this command started down before the summary line: at shutdown Ray logs the errors
    of trial futures that Tune dropped when it stopped the stage (their tracebacks), which would
    otherwise come after the summary that is meant to be the last line."""
    import ray
    if own_ray and ray.is_initialized():
        ray.shutdown()


def _finished_runs(args):
    """(tracking URI, the experiment's tidy runs, its search parents, its search trials); runs is None
    after telling the user there are none. A grid with a `search:` block may have only searches."""
    from grid.tracking import mlflow_runs
    tracking_uri = args.tracking_uri or location.default_tracking_uri()
    runs = mlflow_runs.experiment_runs(tracking_uri, args.experiment)
    parents, children = mlflow_runs.search_runs(tracking_uri, args.experiment)
    if runs.empty and parents.empty:
        print(f"experiment {args.experiment!r} has no finished unlearn runs yet", file=sys.stderr)
        return tracking_uri, None, parents, children
    return tracking_uri, runs, parents, children


def _uncertainty(args):
    """The tables' analysis.statistics.Uncertainty from --spread, --resamples, --ci-seed, --compare-to
    (unchecked: cmd_tables checks it, with the experiment's methods for --compare-to)."""
    from analysis.statistics import Uncertainty
    if args.compare_to is None:   # the defaults: cmd_tables keeps those the experiment has
        return Uncertainty(spread=args.spread, resamples=args.resamples, seed=args.ci_seed)
    baselines = tuple(b.strip() for b in args.compare_to.split(",") if b.strip())
    return Uncertainty(spread=args.spread, resamples=args.resamples, seed=args.ci_seed, baselines=baselines)


def cmd_tables(args):
    from grid.reports import report, report_run
    from grid.tracking import mlflow_runs
    uncertainty = _uncertainty(args)
    problems = [p for p in uncertainty.problems() if p[0] != "compare_to"]   # before any run is read
    if not problems:
        tracking_uri, runs, parents, _ = _finished_runs(args)
        if runs is None:
            return 1
        # --compare-to names a method of the experiment (or retrain): checked before anything is written;
        # without it, the default baselines the experiment lacks (a grid without trw) are left out
        present = sorted(set(runs["method"].dropna().astype(str))) if len(runs) else None
        if args.compare_to is None and present is not None:
            uncertainty = dataclasses.replace(uncertainty, baselines=tuple(
                b for b in uncertainty.baselines if b in present or b == "retrain"))
        problems = uncertainty.problems(present)
    if problems:
        print("error: " + "; ".join(f"--{name.replace('_', '-')}: {message}" for name, message in problems),
              file=sys.stderr)
        return 2
    # neighbour_agreement's A_c of runs logged before their retrain_class_scores tag (minutes of SVMs on the
    # real datasets) are kept between calls in --out
    items = report.build_tables(runs, mlflow_runs.experiment_ulira_runs(tracking_uri, args.experiment),
                                data_root=args.data_root, uncertainty=uncertainty,
                                cache=os.path.join(args.out, ".cache", "neighbour_class_scores.json")) if len(runs) else []
    paths = report.write_tables(items + report.build_search_tables(
        parents, report.holdout_runs(tracking_uri, args.experiment, parents), uncertainty), args.out)   # + its -best grid's runs
    run_id = report_run.log_tables(tracking_uri, args.experiment, paths)
    print(f"{len(paths)} files logged to MLflow run 'report' ({run_id}), artifacts tables/")
    return 0


def cmd_figures(args):
    from grid.reports import report, report_run
    tracking_uri, runs, parents, children = _finished_runs(args)
    if runs is None:
        return 1
    paths = report.write_figures(runs, args.out, toy_models=report.toy_decision_regions(runs)) if len(runs) else []
    paths += report.write_search_figures(parents, children, args.out)
    run_id = report_run.log_figures(tracking_uri, args.experiment, paths)
    print("\n".join(f"  {p}" for p in paths))
    print(f"{len(paths)} figures written to {args.out}/ and logged to MLflow run 'report' ({run_id}), artifacts figures/")
    return 0


def cmd_best(args):
    from grid.reports import best
    try:
        paths = best.write(args.grid, args.out or f"{config.load(args.grid).name}-best.yaml", args.tracking_uri)
    except best.NotSearched as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}: run it with `unlearn-grid run {path}`")
    return 0


def cmd_ui(args):
    from grid.tracking import mlflow_runs, server, ui
    try:
        server.check_host(args.host)   # the UI is the same MLflow server, with no authentication either
    except server.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tracking_uri = args.tracking_uri or location.default_tracking_uri()
    with mlflow_runs.first_contact(tracking_uri):   # a new local store: created once, as `run` creates it
        found = ui.experiments(tracking_uri, args.experiment)
    for name, experiment_id in found:
        print(f"runs of experiment {name!r}: {ui.runs_address(f'http://{args.host}:{args.port}', experiment_id)}")
    if not found:
        print(f"no runs in {uris.masked(tracking_uri)} yet: run a grid first (`unlearn-grid run demo`)")
    # the venv's own mlflow, whether or not the venv is activated
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", args.host, "--port", str(args.port)]
    print(" ".join(command), flush=True)
    os.execvp(command[0], command)


def cmd_stage_data(args):
    """Copy datasets' folders (one tar each) and a weights file into a bucket; print what a grid then says."""
    import json
    from pathlib import Path

    from trainables import data_cache, store
    from trainables.datasets import get_info
    if not args.datasets and not args.weights:
        print("error: name a DATASET to stage, or --weights FILE", file=sys.stderr)
        return 2
    if args.datasets and not args.source:
        print("error: --from DIR is needed: the local data root that holds the datasets' folders", file=sys.stderr)
        return 2
    if not config.is_uri(args.to):
        print(f"error: --to must be a bucket URI (s3://BUCKET/PREFIX, gs://…), got {args.to!r}", file=sys.stderr)
        return 2
    for name in args.datasets:   # an unknown name, or one without files, fails before anything is uploaded
        if get_info(name).folder is None:
            print(f"error: {data_cache.nothing_to_stage(name)}", file=sys.stderr)
            return 2
    snippet = {}
    try:
        for name in args.datasets:
            manifest = data_cache.stage_dataset(name, args.source, args.to)
            print(f"staged {name}: {manifest['file_count']} files, {manifest['archive_bytes']} bytes, "
                  f"sha256 {manifest['archive_sha256']} -> {data_cache.public_uri(args.to)}/{name}/")
            snippet["root"] = args.to
        if args.weights:
            uri = store.join(args.to, "weights", Path(args.weights).name)
            digest = data_cache.stage_file(args.weights, uri)
            print(f"staged weights {Path(args.weights).name}: {Path(args.weights).stat().st_size} bytes, "
                  f"sha256 {digest} -> {data_cache.public_uri(uri)}")
            snippet["weights"] = uri
    except data_cache.DataUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # JSON strings are YAML strings: a URI's ?, & and : stay inside the quotes
    print("in the grid:\n  data: {" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in snippet.items()) + "}")
    return 0


def cmd_server(args):
    from grid.tracking import server
    try:
        server.serve(args.backend_store_uri, args.artifacts_destination, args.host, args.port, args.workers,
                     basic_auth=args.basic_auth)
    except server.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_tracking_db(args):
    from grid.tracking import backup
    try:
        if args.action == "backup":
            size = backup.backup(args.db, args.out)
            print(f"backed up {uris.masked(args.db)} to {args.out} ({size} bytes, pg_dump custom format)")
        elif args.action == "restore":
            revision = backup.restore(args.dump, args.db)
            print(f"restored {args.dump} into {uris.masked(args.db)}; schema at MLflow's revision {revision}")
        else:
            backup.write_pgpass(args.host, args.out, args.secret_id, args.region, args.port)
            print(f"wrote {args.out} (mode 600) for {args.host}:{args.port} from secret {args.secret_id!r}")
    except backup.BackupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def parser():
    top = argparse.ArgumentParser(prog="unlearn-grid", description="Class-unlearning grids on Ray Tune + MLflow.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid (a YAML path or a bundled name: %s)" % ", ".join(config.bundled_grids()))
    run.add_argument("grid")
    _add_store_options(run)
    run.add_argument("--address", default=None,
                     help="Ray cluster to run on: HOST:PORT, or 'auto' for the cluster `ray start` started on this "
                          "machine (default: start a fresh local Ray instance)")
    run.add_argument("--cluster", default=None, metavar="FILE",
                     help="the Ray cluster-launcher file the cluster was started from (cluster.yaml, or "
                          "~/ray_bootstrap_config.yaml on its head): packs are sized for the cluster at its "
                          "maximum, not for its nodes at start (default: $UNLEARN_GRID_CLUSTER, which "
                          "cluster.yaml's head sets)")
    _add_data_root_option(run)
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser("validate", help="validate a grid, count its trials and estimate its GPU-hours "
                                               "(what is cached included); schedules nothing, writes nothing")
    validate.add_argument("grid")
    _add_store_options(validate)
    validate.add_argument("--throughput", default=None, metavar="FILE",
                          help="measured training throughput (JSON from bench/train_throughput.py --save FILE); "
                               "default: the ASSUMED table in grid/plan/cost.py")
    validate.add_argument("--gpus", type=int, default=None,
                          help="GPUs for the wall-clock estimate (default 1), at the trials per GPU the grid's "
                               "resources allow")
    validate.add_argument("--cluster", default=None, metavar="FILE",
                          help="a Ray cluster-launcher file (cluster.yaml): print how many trials fit per node and "
                               "per GPU of each node type, warn when GPUs stay partly idle, and estimate the "
                               "wall-clock on the cluster at its maximum")
    _add_data_root_option(validate)
    validate.set_defaults(func=cmd_validate)
    tables_cmd = sub.add_parser("tables", help="write the tables of an experiment (.csv, .md, .tex) and log them "
                                               "to its MLflow run 'report' (artifacts tables/, replaced each call)")
    tables_cmd.add_argument("experiment", help="MLflow experiment = the grid's name")
    _add_store_options(tables_cmd, storage=False)
    tables_cmd.add_argument("--out", default="tables", help="output folder (default: ./tables)")
    tables_cmd.add_argument("--data-root", default=None,
                            help="where the datasets are, for the neighbour_agreement similarities that read "
                                 "training data (default: the grids' default, ./unlearn-grid/data)")
    tables_cmd.add_argument("--spread", default="seeds",
                            help="what the ± spans: seeds (per-seed means; default), forget_classes (per-forget-set "
                                 "means: our reading of the paper's ±) or units (every (seed, forget set, "
                                 "unlearning seed))")
    tables_cmd.add_argument("--resamples", type=int, default=1000,
                            help="bootstrap resamples per interval (default 1000, at least 100)")
    tables_cmd.add_argument("--ci-seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    tables_cmd.add_argument("--compare-to", default=None,
                            help="methods every method is paired with in the comparisons table (default: trw and "
                                 "retrain, those of them the experiment has)")
    tables_cmd.set_defaults(func=cmd_tables)
    figures_cmd = sub.add_parser("figures", help="write the experiment's figures (PNG) and log them to its MLflow "
                                                 "run 'report' (artifacts figures/, replaced each call)")
    figures_cmd.add_argument("experiment", help="MLflow experiment = the grid's name")
    _add_store_options(figures_cmd, storage=False)
    figures_cmd.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    figures_cmd.set_defaults(func=cmd_figures)
    best_cmd = sub.add_parser("best", help="write a grid with each searched method's best params (every seed, "
                                           "evaluated on the holdout split), from a search grid's finished searches")
    best_cmd.add_argument("grid", help="the search grid (a YAML path or a bundled name)")
    _add_store_options(best_cmd, storage=False)
    best_cmd.add_argument("--out", default=None, metavar="FILE", help="grid file to write (default: NAME-best.yaml)")
    best_cmd.set_defaults(func=cmd_best)
    ui = sub.add_parser("ui", help="start the MLflow UI on the store; prints the address of each experiment's "
                                   "runs table (MLflow 3.17 would open an experiment on its GenAI overview)")
    ui.add_argument("experiment", nargs="?", default=None, help="print only this experiment's address")
    _add_store_options(ui, storage=False)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1; never 0.0.0.0 or ::: MLflow has no authentication)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    stage = sub.add_parser("stage-data", help="copy datasets (one tar each, with a SHA-256 manifest) and a weights "
                                              "file into a bucket that a grid's data.root / data.weights then names")
    stage.add_argument("datasets", nargs="*", metavar="DATASET", help="datasets to stage, e.g. mnist cifar10")
    stage.add_argument("--from", dest="source", default=None, metavar="DIR",
                       help="the local data root holding the datasets' folders (e.g. ./unlearn-grid/data)")
    stage.add_argument("--to", required=True, metavar="URI", help="the bucket data root, s3://BUCKET/PREFIX[?…]")
    stage.add_argument("--weights", default=None, metavar="FILE",
                       help="a .pth weights file to stage too, as URI/weights/FILENAME")
    stage.set_defaults(func=cmd_stage_data)
    serve = sub.add_parser("server", help="MLflow tracking server for a cluster: PostgreSQL backend store (an "
                                          "external database, docs/tracking-database.md), proxied artifacts, "
                                          "bound to 127.0.0.1 unless told otherwise")
    serve.add_argument("--backend-store-uri", required=True, metavar="URI",
                       help="postgresql://USER@HOST:PORT/DB[?sslmode=require], the password in the pgpass file "
                            "(PGPASSFILE, ~/.pgpass), never in the URI (argv is visible to every user); "
                            "sqlite:///PATH on one machine")
    serve.add_argument("--artifacts-destination", required=True, metavar="DIR_OR_URI",
                       help="where the server stores artifacts: a folder, or s3://BUCKET/PREFIX")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; on a cluster the head's private address, never 0.0.0.0)")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    serve.add_argument("--basic-auth", action="store_true",
                       help="MLflow's basic-auth app (users, passwords, per-experiment permissions) with this "
                            "project's run-table route; configured by MLflow's MLFLOW_AUTH_CONFIG_PATH, "
                            "MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD")
    serve.set_defaults(func=cmd_server)
    database = sub.add_parser("tracking-db", help="back up and restore the MLflow tracking database (PostgreSQL); "
                                                  "passwords come from the pgpass file (PGPASSFILE, ~/.pgpass)")
    actions = database.add_subparsers(dest="action", required=True)
    dump = actions.add_parser("backup", help="pg_dump --format=custom of the database into one file")
    dump.add_argument("--db", required=True, metavar="URI", help="postgresql://USER@HOST:PORT/DB[?sslmode=require]")
    dump.add_argument("--out", required=True, metavar="FILE", help="the dump file to write")
    load = actions.add_parser("restore", help="restore a dump into a fresh, empty database, then `mlflow db upgrade` "
                                              "it to this MLflow's schema and check the revision")
    load.add_argument("dump", metavar="FILE", help="a file from `unlearn-grid tracking-db backup`")
    load.add_argument("--db", required=True, metavar="URI",
                      help="a fresh database no MLflow server has touched yet: postgresql://USER@HOST:PORT/DB")
    secret = actions.add_parser("pgpass", help="write the pgpass file (mode 600) from the AWS Secrets Manager secret "
                                               "holding the database password (RDS's JSON or a bare password)")
    secret.add_argument("--host", required=True, help="the database host the line is for (the RDS endpoint)")
    secret.add_argument("--out", required=True, metavar="FILE")
    secret.add_argument("--secret-id", default="unlearn-grid/mlflow-db")
    secret.add_argument("--region", default=None, help="AWS region (default: the environment's)")
    secret.add_argument("--port", type=int, default=5432)
    database.set_defaults(func=cmd_tracking_db)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except config.GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except plugins.PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except LookupError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
