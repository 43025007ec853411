"""Grid files are validated completely before anything runs: each problem names its field."""
import copy

import pytest
import yaml

from grid import cli
from grid.plan import config

VALID = {
    "name": "unit",
    "datasets": "digits",
    "archs": ["small_cnn"],
    "forget_classes": [8, "3", [1, 2]],
    "seeds": [0, 1],
    "train": {"epochs": 2, "lr": 0.05},
    "methods": {"trw": {"lam": [0, 10], "epochs": [1, 2]}, "ft": {}},
}


def problems_of(raw):
    with pytest.raises(config.GridError) as caught:
        config.build_plan(raw)
    return dict(caught.value.problems), str(caught.value)


def with_change(**changes):
    raw = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def test_valid_grid_expands_to_the_cartesian_product():
    plan = config.build_plan(copy.deepcopy(VALID))
    assert len(plan.original) == 2                       # one per seed
    assert len(plan.retrain) == 3 * 2                    # forget sets x seeds
    # per forget set and seed: the Original evaluation + trw 2 lam x 2 epochs + ft
    assert len(plan.unlearn) == 3 * 2 * (1 + 4 + 1)
    assert [t["spec"]["forget_classes"] for t in plan.retrain[::2]] == [[8], [3], [1, 2]]
    assert len({t["key"] for t in plan.unlearn}) == len(plan.unlearn)


def test_keys_are_deterministic_and_depend_on_the_config():
    first = config.build_plan(copy.deepcopy(VALID))
    second = config.build_plan(copy.deepcopy(VALID))
    assert [t["key"] for t in first.unlearn] == [t["key"] for t in second.unlearn]
    changed = config.build_plan(with_change(train={"epochs": 3, "lr": 0.05}))
    assert {t["key"] for t in changed.original}.isdisjoint(t["key"] for t in first.original)


def test_unlearn_trials_link_their_original_and_retrain_models():
    plan = config.build_plan(copy.deepcopy(VALID))
    originals = {t["spec"]["seed"]: t["key"] for t in plan.original}
    for trial in plan.unlearn:
        assert trial["original_key"] == originals[trial["spec"]["seed"]]
        linked = [t for t in plan.retrain if t["key"] in trial["retrain_keys"]]
        assert {t["spec"]["seed"] for t in linked} == {0, 1}
        assert all(t["spec"]["forget_classes"] == trial["spec"]["forget_classes"] for t in linked)


def test_default_split_stays_out_of_trial_keys_and_holdout_changes_them():
    default = config.build_plan(copy.deepcopy(VALID))
    explicit_test = config.build_plan(with_change(evaluation={"split": "test"}))
    holdout = config.build_plan(with_change(evaluation={"split": "holdout"}))
    # the default adds no `split` to specs: grids written before it keep their keys (and cached runs)
    assert all("split" not in t["spec"]["evaluation"] for t in default.retrain + default.unlearn)
    assert [t["key"] for t in explicit_test.unlearn] == [t["key"] for t in default.unlearn]
    assert all(t["spec"]["evaluation"]["split"] == "holdout" for t in holdout.retrain + holdout.unlearn)
    # holdout trials report on other samples: new Retrain and unlearn keys; originals are shared
    assert {t["key"] for t in holdout.retrain}.isdisjoint(t["key"] for t in default.retrain)
    assert {t["key"] for t in holdout.unlearn}.isdisjoint(t["key"] for t in default.unlearn)
    assert [t["key"] for t in holdout.original] == [t["key"] for t in default.original]


def test_a_models_stored_key_leaves_out_how_it_is_evaluated():
    """Model keys (trainables/keys.py): a holdout grid's Retrain models are the test grid's (same model
    key, so stored once and evaluated by both) while their runs are not (other trial keys); what unlearn
    trials and U-LiRA attacks read from the store is named by model keys."""
    default = config.build_plan(with_change(ulira={"shadow_models": 2}))
    holdout = config.build_plan(with_change(evaluation={"split": "holdout"}, ulira={"shadow_models": 2}))
    assert [t["model_key"] for t in holdout.retrain] == [t["model_key"] for t in default.retrain]
    assert all(t["model_key"] != t["key"] for t in holdout.retrain)
    assert all(t["model_key"] == t["key"] for t in default.original + default.unlearn)
    retrain = {t["key"]: t for t in holdout.retrain}
    for trial in holdout.unlearn:
        assert trial["retrain_model_keys"] == [retrain[k]["model_key"] for k in trial["retrain_keys"]]
        assert trial["retrain_seeds"] == [retrain[k]["spec"]["seed"] for k in trial["retrain_keys"]] == [0, 1]
    stored = {t["model_key"] for t in holdout.retrain}
    assert all(set(attack["out_keys"]) <= stored for attack in holdout.ulira)


@pytest.mark.parametrize("change, field, fragment", [
    (dict(datasets="imagenet-42"), "datasets", "allowed: ['cifar10', 'cifar100', 'digits', 'mnist'"),
    (dict(archs="transformer"), "archs", "small_cnn"),
    (dict(methods={"magic": {}}), "methods.magic", "allowed: ["),
    (dict(forget_classes=[10]), "forget_classes", "0..9"),
    (dict(forget_classes=["cat"]), "forget_classes", "not a class of digits"),
    (dict(forget_classes=[list(range(10))]), "forget_classes", "leave at least one"),
    (dict(methods={"trw": {"lam": [10, -1]}}), "methods.trw.lam", ">= 0"),
    (dict(methods={"trw": {"lam": []}}), "methods.trw.lam", "empty list"),
    (dict(methods={"trw": {"epochs": "ten"}}), "methods.trw.epochs", "whole number"),
    (dict(methods={"trw": {"similarity": "euclid"}}), "methods.trw.similarity", "weight_pca_cosine"),
    (dict(methods={"ft": {"lam": 1}}), "methods.ft.lam", "unknown parameter"),
    (dict(seeds=[]), "seeds", "empty list"),
    (dict(seeds=["a"]), "seeds", "whole numbers"),
    (dict(name=None), "name", "missing"),
    (dict(methods=None), "methods", "missing"),
    (dict(forget_classes=None), "forget_classes", "missing"),
    (dict(train={"epochs": 0}), "train.epochs", ">= 1"),
    (dict(train={"warmup": 3}), "train.warmup", "allowed"),
    (dict(resources={"cpu": 0}), "resources.cpu", "> 0"),
    (dict(resources={"gpu": -0.5}), "resources.gpu", ">= 0"),
    (dict(evaluation={"class_weight": "auto"}), "evaluation.class_weight", "balanced"),
    (dict(evaluation={"split": "train"}), "evaluation.split", "must be one of ['test', 'holdout'], got 'train'"),
    (dict(checkpoint_minutes=-1), "checkpoint_minutes", ">= 0"),
    (dict(colour="blue"), "colour", "unknown field"),
    (dict(datasets=None), "datasets", "missing; give one or a list of ['cifar10', 'cifar100', 'digits', 'mnist'"),
    (dict(archs=[]), "archs", "empty list gives no trials; allowed: ["),
    # digits images have 1 channel; the ImageNet-pretrained arch takes exactly 3
    (dict(archs=["small_cnn", "resnet18_imagenet"]), "archs",
     "resnet18_imagenet takes 3-channel inputs; dataset digits has 1"),
    (dict(forget_classes=[]), "forget_classes", "empty list gives no trials"),
    (dict(train={"lr": 0}), "train.lr", "> 0, got 0"),              # lr 0 is a float >= 0 but trains nothing
    (dict(unlearn_seeds=[]), "unlearn_seeds", "empty list gives no trials"),
    (dict(unlearn_seeds=[0, -1]), "unlearn_seeds", "whole numbers in 0..4294967295, got -1"),
    (dict(unlearn_seeds=[True]), "unlearn_seeds", "got True"),       # YAML `yes` is a bool, and bool is an int
    (dict(evaluation="balanced"), "evaluation",
     "must be a mapping with keys ['class_weight', 'seed', 'split', 'svm_max_samples']"),
    (dict(evaluation={"folds": 5}), "evaluation.folds",
     "unknown field; allowed: ['class_weight', 'seed', 'split', 'svm_max_samples']"),
    (dict(evaluation={"seed": -1}), "evaluation.seed", "0..4294967295, got -1"),
    (dict(evaluation={"svm_max_samples": 9}), "evaluation.svm_max_samples", "10..2147483647, got 9"),
    (dict(resources={"memory": 4}), "resources.memory", "allowed: ['compile', 'cpu', 'fast_path', 'gpu']"),
    (dict(resources={"fast_path": True}), "resources.fast_path",    # YAML `on` is True, not 'on'
     "must be one of ['auto', 'on', 'off'], got True"),
    (dict(resources={"compile": "yes"}), "resources.compile", "must be true or false, got 'yes'"),
    (dict(data="/data"), "data", "must be a mapping with keys ['download', 'root', 'weights']"),
    (dict(data={"cache": "/tmp"}), "data.cache", "allowed: ['download', 'root', 'weights']"),
    (dict(data={"root": 3}), "data.root", "must be a path, a bucket URI or null, got 3"),
    (dict(data={"download": "yes"}), "data.download", "must be true or false, got 'yes'"),
    (dict(data={"weights": ["a.pth"]}), "data.weights", "must be a path or URI to a .pth file or null, got ['a.pth']"),
    (dict(ulira=2), "ulira", "must be a mapping with keys ['bank', 'fprs', 'shadow_models', 'variance']"),
    (dict(ulira={"shadows": 2}), "ulira.shadows", "allowed: ['bank', 'fprs', 'shadow_models', 'variance']"),
    # one shadow model gives no variance to estimate: 0 or >= 2
    (dict(ulira={"shadow_models": 1}), "ulira.shadow_models", "must be 0 (no U-LiRA) or a whole number >= 2, got 1"),
    (dict(ulira={"shadow_models": 3}), "ulira.shadow_models", "got 3 with seeds [0, 1]"),   # VALID has 2 seeds
    (dict(ulira={"variance": "local"}), "ulira.variance", "must be one of ['auto', 'global', 'per_sample'], got 'local'"),
    (dict(ulira={"bank": 1}), "ulira.bank", "must be 0 (no bank) or a whole number in 2..64"),
    (dict(ulira={"bank": 65}), "ulira.bank", "got 65"),
    (dict(ulira={"bank": 2.5}), "ulira.bank", "got 2.5"),
    (dict(ulira={"bank": 4, "shadow_models": 2}), "ulira.bank", "not both"),
    (dict(seeds=[0, 10_001], ulira={"bank": 4}), "ulira.bank", "must not be among the grid's seeds; got seeds [10001]"),
    (dict(ulira={"fprs": [0.01, 1.0]}), "ulira.fprs", "each must be a number in (0, 1) (0.01 = 1%), got 1.0"),
    (dict(ulira={"fprs": [0]}), "ulira.fprs", "got 0"),
    (dict(ulira={"fprs": []}), "ulira.fprs", "must be a non-empty list of false-positive rates in (0, 1)"),
])
def test_each_invalid_field_is_named_with_what_is_allowed(change, field, fragment):
    problems, message = problems_of(with_change(**change))
    assert field in problems, message
    assert fragment in problems[field], message


@pytest.mark.parametrize("text, fragment", [
    ("name: g\ndatasets: [digits\n", "not valid YAML"),                    # an unclosed list
    ("- digits\n- small_cnn\n", "must be a YAML mapping of fields"),       # a list, not a mapping
])
def test_a_file_that_is_not_a_yaml_mapping_is_refused(text, fragment, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    with pytest.raises(config.GridError) as caught:
        config.load(str(grid))
    assert [name for name, _ in caught.value.problems] == ["(file)"]
    assert fragment in caught.value.problems[0][1]
    assert cli.main(["validate", str(grid)]) == 2
    assert fragment in capsys.readouterr().err


def test_all_problems_are_reported_at_once():
    problems, _ = problems_of(with_change(datasets="nope", seeds=[], methods={"trw": {"lam": -1}}))
    assert {"datasets", "seeds", "methods.trw.lam"} <= set(problems)


def test_bundled_grids_validate():
    assert "demo" in config.bundled_grids()
    for name in config.bundled_grids():
        plan = config.load(name)
        assert plan.unlearn or plan.search   # a search grid has search cells instead of unlearn trials


def test_cli_rejects_an_invalid_file_before_writing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_change(methods={"trw": {"lam": -3}})))
    code = cli.main(["run", str(bad), "--tracking-uri", f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    assert code == 2
    err = capsys.readouterr().err
    assert "methods.trw.lam" in err and ">= 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_cli_names_bundled_grids_for_an_unknown_grid(capsys):
    assert cli.main(["validate", "no-such-grid"]) == 2
    assert "demo" in capsys.readouterr().err


def test_cli_validate_counts_trials(capsys):
    assert cli.main(["validate", "demo"]) == 0
    assert "unlearn trials" in capsys.readouterr().out
