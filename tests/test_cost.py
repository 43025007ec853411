"""The cost model behind `unlearn-grid validate` (grid/plan/cost.py) and the bundled paper grids."""
import json
import re

import pytest
import yaml

from grid import cli
from grid.plan import config, cost
from trainables import methods

PAPER_GRIDS = ["paper-mnist", "paper-cifar10", "paper-cifar100", "paper-tinyimagenet"]

# digits: 1437 train / 360 test, 10 classes -> forget class 8 holds 143.7 train samples, retain 1293.3
SMALL = {"name": "cost-small", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8],
         "seeds": [0, 1], "train": {"epochs": 3}, "methods": {"ft": {"epochs": 5}},
         "resources": {"cpu": 1, "gpu": 0.5}}
EVAL = (1437 + 360) / 3                      # 599: one forward pass over train + test
ORIGINAL = 3 * 1437 + EVAL                   # 4910 per original
RETRAIN = 3 * 1293.3 + EVAL                  # 4478.9 per Retrain model
ORIGINAL_ROW = EVAL                          # the unlearn stage's Original row: evaluation only
FT = 5 * 1293.3 + EVAL                       # ft trains on retain only: 7065.5
RATE = 1000.0                                # images/s, set by the test


def small_plan(**changes):
    return config.build_plan({**SMALL, **changes})


def rate(value=RATE):
    return cost.Throughput(assumed={"small_cnn/8": value})


@pytest.mark.parametrize("name", PAPER_GRIDS)
def test_paper_grids_validate_and_their_headers_state_their_trial_counts(name):
    plan = config.load(name)
    assert plan.unlearn and {"trw", "trw_2r", "svd", "l2ul"} <= {t["spec"]["method"] for t in plan.unlearn}
    assert all(t["spec"]["params"]["lam"] == 10 for t in plan.unlearn if t["spec"]["method"] in ("trw", "trw_2r"))
    assert plan.grid["seeds"] == [0, 1, 2]
    assert all(len(sets) == 10 and all(len(s) == 1 for s in sets) for sets in plan.grid["forget_sets"].values())
    header = config.resolve(name).read_text()
    counts = re.search(r"Trials \(unlearn-grid validate\): (\d+) original, (\d+) retrain, (\d+) unlearn", header)
    assert counts, f"{name}: header lacks its trial counts"
    assert tuple(map(int, counts.groups())) == (len(plan.original), len(plan.retrain), len(plan.unlearn))
    hours = re.search(r"ASSUMED throughput table, H100-class GPU, not measured\): ~([\d.]+)\s*#?\s*GPU-hours", header)
    assert hours, f"{name}: header lacks its expected GPU-hours"
    assert float(hours.group(1)) == pytest.approx(cost.estimate(plan).hours, abs=0.06), "header's GPU-hours are stale"
    assert bool(plan.ulira) == (name == "paper-cifar10")


def test_estimate_of_a_small_grid_matches_the_hand_computed_images_and_hours():
    plan = small_plan()
    est = cost.estimate(plan, rate())
    stages = est.stages
    assert [stages[s].trials for s in ("original", "retrain", "unlearn")] == [2, 2, 4]
    assert stages["original"].images == pytest.approx(2 * ORIGINAL)
    assert stages["retrain"].images == pytest.approx(2 * RETRAIN)
    assert stages["unlearn"].images == pytest.approx(2 * ORIGINAL_ROW + 2 * FT)
    total = 2 * ORIGINAL + 2 * RETRAIN + 2 * ORIGINAL_ROW + 2 * FT     # 35106.8 images
    assert est.hours == pytest.approx(total / RATE / 3600)
    assert est.hours_todo == pytest.approx(est.hours)
    # gpu 0.5: two trials share a GPU and split its throughput: on one GPU the wall-clock is the GPU-hours
    assert est.wall_hours(1) == pytest.approx(est.hours)
    # on 4 GPUs each stage is bounded by its longest trial (2 originals cannot use 4 GPUs), slowed by the
    # trial it shares its GPU with: two per GPU at gpu 0.5 (the autoscaler packs them onto one GPU node)
    assert est.wall_hours(4) == pytest.approx(2 * (ORIGINAL + RETRAIN + FT) / RATE / 3600)
    # where the node types fit one trial per GPU (grid/plan/shapes.py), each runs alone at full speed
    assert est.wall_hours(4, trials_per_gpu=1) == pytest.approx((ORIGINAL + RETRAIN + FT) / RATE / 3600)


def test_method_rules_count_forget_only_methods_on_the_forget_set():
    plan = small_plan(methods={"ga": {"epochs": 4}, "svd": {}, "rl": {"epochs": 2}})
    images = {t["spec"]["method"]: cost.trial_images(t["spec"]) for t in plan.unlearn if t["spec"]["seed"] == 0}
    assert images["ga"] == pytest.approx(4 * 143.7 + EVAL)
    assert images["rl"] == pytest.approx(2 * 1437 + EVAL)
    assert images["svd"] == pytest.approx((900 + 143.7) / 3 + EVAL)     # ≤ 900 retain + all 143.7 forget
    assert set(cost.UNLEARN_WORK) >= set(methods.METHODS)       # every registered method has a rule


def test_cached_reference_models_and_finished_unlearn_runs_reduce_what_remains():
    plan = small_plan()
    full = cost.estimate(plan, rate())
    cached = {plan.original[0]["key"], plan.retrain[1]["key"]}
    ft_trial = next(t for t in plan.unlearn if t["spec"]["method"] == "ft")
    est = cost.estimate(plan, rate(), cached_keys=cached, finished_unlearn_keys={ft_trial["key"]})
    assert [est.stages[s].done for s in ("original", "retrain", "unlearn")] == [1, 1, 1]
    assert est.hours == pytest.approx(full.hours)                      # the whole grid is unchanged
    assert est.hours_todo == pytest.approx(full.hours - (ORIGINAL + RETRAIN + FT) / RATE / 3600)
    # an unlearn key is not a reference model: passed as cached it changes nothing
    assert cost.estimate(plan, rate(), cached_keys={ft_trial["key"]}).hours_todo == pytest.approx(full.hours)


def test_throughput_lookup_scales_by_pixels_and_refuses_to_guess_an_unknown_arch():
    table = cost.Throughput(assumed={"resnet18/32": 20_000.0, "resnet18/8": 1e6})
    assert table.lookup("resnet18", 32) == (20_000.0, "assumed")
    value, source = table.lookup("resnet18", 64)
    assert value == pytest.approx(5_000.0) and "scaled from resnet18/32" in source
    assert table.lookup("vgg19", 32) == (None, "unknown")
    est = cost.estimate(small_plan(), cost.Throughput(assumed={"resnet18/32": 1.0}))
    report = cost.format_report(est)
    assert "unknown" in report and "digits/small_cnn/8" in report


def test_measured_entries_win_and_missing_archs_fall_back_to_the_assumed_table():
    table = cost.Throughput(measured={"resnet18/32": 30_000.0}, device="GPU X", file="t.json")
    assert table.lookup("resnet18", 32) == (30_000.0, "measured")
    assert table.lookup("vgg19", 32) == (cost.ASSUMED_THROUGHPUT["vgg19/32"], "assumed")


def _write_grid(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return str(path)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_validate_prints_the_assumed_cost_report_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = _write_grid(tmp_path)
    before = _listing(tmp_path)
    # default tracking/storage (./unlearn-grid/...) and an explicit sqlite URI: neither store is created
    assert cli.main(["validate", grid]) == 0
    assert cli.main(["validate", grid, "--tracking-uri", f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")]) == 0
    assert _listing(tmp_path) == before
    out = capsys.readouterr().out
    assert "2 original, 2 retrain, 4 unlearn trials" in out
    assert "no store yet, nothing cached" in out
    assert "ASSUMED" in out and "not measured" in out and "assumed" in out
    assert re.search(r"total\s+8\s+0\s+8", out)


def test_throughput_file_overrides_the_table_and_says_where_it_was_measured(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = _write_grid(tmp_path)
    measured = tmp_path / "throughput.json"
    measured.write_text(json.dumps({"device": "Test GPU 80GB", "path": "fast",
                                    "images_per_second": {"small_cnn/8": 1000.0}}))
    assert cli.main(["validate", grid, "--throughput", str(measured)]) == 0
    out = capsys.readouterr().out
    assert "measured on Test GPU 80GB" in out
    row = next(line for line in out.splitlines() if "digits/small_cnn/8" in line)
    assert "measured" in row and "1,000" in row
    total = 2 * ORIGINAL + 2 * RETRAIN + 2 * ORIGINAL_ROW + 2 * FT
    assert f"{total / RATE / 3600:.2f}" in row


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    ("not json", "not readable JSON"),
    (json.dumps({"device": "X", "images_per_second": {}}), "images_per_second"),
    (json.dumps({"device": "X", "images_per_second": {"resnet18": 10}}), "arch/side"),
    (json.dumps({"device": "X", "images_per_second": {"resnet18/32": -1}}), "> 0"),
    (json.dumps({"images_per_second": {"resnet18/32": 10}}), "device"),
])
def test_an_invalid_throughput_file_is_exit_code_2_naming_the_file_and_format(tmp_path, capsys, monkeypatch,
                                                                              content, fragment):
    monkeypatch.chdir(tmp_path)
    grid = _write_grid(tmp_path)
    bad = tmp_path / "bench-out.json"
    if content is not None:
        bad.write_text(content)
    assert cli.main(["validate", grid, "--throughput", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and fragment in err and "images_per_second" in err
    assert "bench/train_throughput.py --save" in err


def test_validate_counts_what_the_store_already_has(tmp_path, capsys, monkeypatch):
    """A reference model counts as cached only with a FINISHED run of its stage AND stored weights;
    unlearn runs count when FINISHED in the grid's experiment."""
    import mlflow
    from grid.tracking import mlflow_runs
    from trainables import store
    monkeypatch.chdir(tmp_path)
    grid = _write_grid(tmp_path)
    plan = config.load(grid)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    experiment_id = mlflow_runs.ensure_experiment(uri, plan.name)
    ft_trial = next(t for t in plan.unlearn if t["spec"]["method"] == "ft")
    for stage, key in [("original", plan.original[0]["key"]), ("original", plan.original[1]["key"]),
                       ("retrain", plan.retrain[0]["key"]), ("unlearn", ft_trial["key"])]:
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.set_tags({"stage": stage, "key": key})
    # stored models are under their model keys (a Retrain model's leaves the evaluation out); original[1] has no weights
    for key in (plan.original[0]["model_key"], plan.retrain[0]["model_key"]):
        for name in (store.MODEL_FILE, store.LOGITS_FILE):
            store.write(str(storage), key, name, b"")    # with its hash: stored weights count only with one
    before = _listing(tmp_path)
    assert cli.main(["validate", grid, "--tracking-uri", uri, "--storage", str(storage)]) == 0
    assert _listing(tmp_path) == before
    out = capsys.readouterr().out
    assert re.search(r"original\s+2\s+1\s+1", out)
    assert re.search(r"retrain\s+2\s+1\s+1", out)
    assert re.search(r"unlearn\s+4\s+1\s+3", out)
    assert re.search(r"total\s+8\s+3\s+5", out)
