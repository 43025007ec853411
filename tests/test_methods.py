"""Every registered unlearning method on the tiny digits problem, plus param validation.

Parametrized over the whole registry: a newly registered method is tested automatically with its
default params (plus an entry in OVERRIDES only if its paper defaults cannot forget digits class 8).
"""
import pytest
import torch

from analysis.metrics import per_class_accuracy, retain_forget_accuracy
from trainables import methods, models

# Per-method overrides of the paper defaults, kept minimal; every other method runs as registered.
OVERRIDES = {
    # FT only fine-tunes on the retain set; at its default lr 0.01 the digits model keeps ~94-100% forget
    # accuracy after 20 epochs (the tiny problem is too easy to drift from: a true property of FT, not a bug).
    # lr 0.1 over the same 20 epochs drops it to ~23%, which is what the forgetting test checks.
    "ft": {"lr": 0.1},
    # l1 is FT plus a decaying L1 penalty: at the reference lr 0.01 the digits model keeps ~94% forget
    # accuracy (like FT); lr 0.1 reaches 0% (plain FT at lr 0.1: ~23%, so the penalty matters).
    "l1": {"lr": 0.1},
    # SCRUB at lr 5e-4 makes only 10 max steps (2 epochs x 5 forget batches of 32) before the reference's lr
    # decay: forget accuracy stays ~80-83% on digits (seeds 0-2); lr 1e-3 gives ~31-34%.
    "scrub": {"lr": 1e-3},
}
# Floors from what a working method must reach on the tiny problem (10 digit classes, ~36 test samples a class,
# 325 of the 9 retained classes), not from what the methods happen to score today:
# - forgetting: the forgotten class is recognised for fewer than half of its test samples (Retrain: none).
MAX_FORGET_ACCURACY = 50.0
# - selectivity (every method): forgetting class f costs f more than it costs any retained class; a method
#   that forgets by wrecking the model (a sign error that also ascends the retain loss) does not.
# - retention, for methods that train on the retain set (the data Retrain learns from, starting from a model
#   that already fits it): at most one more test mistake per retained class than the Original.
# - retention, for methods that never see the retain set (they move the model away from the forget class
#   alone): damage worth at most one whole retained class more, Acc_r >= (C - 2) / (C - 1) of the Original's.
NO_RETAIN_SET = {"ga", "l2ul", "bu_shrink", "bu_expand"}
# l2ul is held to selectivity, and to beating a constant guess among the retained classes: on 8x8 digits its
# ε = 4 adversarial anchors are real-looking digits of other classes labelled at random, so it trains the
# retained classes toward noise.
SELECTIVITY_ONLY = {"l2ul"}


@pytest.fixture(scope="module", params=sorted(methods.METHODS))
def outcome(request, tiny_problem):
    """Run the method with seed 0 (its params as tested for forgetting), and a determinism pair at 2
    epochs where it has epochs (an epoch boundary inside: the state carried between epochs is part of the
    check); record the original's state before and after."""
    name = request.param
    before = {k: v.clone() for k, v in tiny_problem.original.state_dict().items()}
    params = OVERRIDES.get(name, {})
    first = methods.unlearn(name, tiny_problem.task(seed=0), params)
    short = {**params, "epochs": 2} if "epochs" in methods.METHODS[name].defaults else params
    pair = [methods.unlearn(name, tiny_problem.task(seed=0), short) for _ in range(2)]
    return {"name": name, "before": before, "first": first, "pair": pair}


def test_method_forgets_the_class(outcome, tiny_problem):
    labels = tiny_problem.dataset.test_y.numpy()
    _, acc_f = retain_forget_accuracy(tiny_problem.logits_on_test(outcome["first"]), labels, [tiny_problem.forget_class])
    assert acc_f < MAX_FORGET_ACCURACY, f"{outcome['name']}: forget accuracy {acc_f:.1f}"


def test_method_forgets_the_forget_class_more_than_any_retained_class(outcome, tiny_problem):
    labels, forget = tiny_problem.dataset.test_y.numpy(), tiny_problem.forget_class
    before = per_class_accuracy(tiny_problem.original_test_logits, labels, tiny_problem.num_classes)
    after = per_class_accuracy(tiny_problem.logits_on_test(outcome["first"]), labels, tiny_problem.num_classes)
    drops = before - after
    worst = max((c for c in range(tiny_problem.num_classes) if c != forget), key=lambda c: drops[c])
    assert drops[worst] < drops[forget], \
        f"{outcome['name']}: class {worst} lost {drops[worst]:.1f} points, the forget class {drops[forget]:.1f}"


def test_method_keeps_the_retained_classes(outcome, tiny_problem):
    name = outcome["name"]
    labels, forget = tiny_problem.dataset.test_y.numpy(), [tiny_problem.forget_class]
    original_acc_r, _ = retain_forget_accuracy(tiny_problem.original_test_logits, labels, forget)
    acc_r, _ = retain_forget_accuracy(tiny_problem.logits_on_test(outcome["first"]), labels, forget)
    retained = tiny_problem.num_classes - 1
    if name in SELECTIVITY_ONLY:
        floor = 100.0 / retained
    elif name in NO_RETAIN_SET:
        floor = original_acc_r * (retained - 1) / retained
    else:
        floor = original_acc_r - 100.0 * retained / int((labels != forget[0]).sum())
    assert acc_r >= floor, f"{name}: retained acc {acc_r:.1f} vs original {original_acc_r:.1f} (floor {floor:.1f})"


def test_method_returns_new_model_with_original_output_size(outcome, tiny_problem):
    model = outcome["first"]
    assert model is not tiny_problem.original
    assert models.final_layer(model).out_features == tiny_problem.num_classes
    assert tiny_problem.logits_on_test(model).shape == (len(tiny_problem.dataset.test_y), tiny_problem.num_classes)


def test_method_leaves_original_untouched(outcome, tiny_problem):
    after = tiny_problem.original.state_dict()
    assert after.keys() == outcome["before"].keys()
    for key, value in outcome["before"].items():
        assert torch.equal(value, after[key]), f"{outcome['name']} changed the original's {key}"


def test_method_deterministic_under_seed(outcome):
    first, second = (model.state_dict() for model in outcome["pair"])
    for key in first:
        assert torch.equal(first[key], second[key]), f"{outcome['name']}: {key} differs between runs"


def test_unlearn_unknown_method(tiny_problem):
    with pytest.raises(KeyError, match="trw"):
        methods.unlearn("no_such_method", tiny_problem.task(), {})


# ---------------------------------------------------------------- params

ALL = sorted(methods.METHODS)


def _error_params(name, params):
    errors = methods.check_params(name, params)
    assert all(isinstance(message, str) and message for _, message in errors)
    return [param for param, _ in errors]


@pytest.mark.parametrize("name", ALL)
def test_defaults_are_valid_params(name):
    assert methods.check_params(name, {}) == []
    assert methods.check_params(name, dict(methods.METHODS[name].defaults)) == []


@pytest.mark.parametrize("name", ALL)
def test_unknown_param_is_named(name):
    errors = methods.check_params(name, {"no_such_param": 1})
    assert [p for p, _ in errors] == ["no_such_param"]
    assert all(key in errors[0][1] for key in methods.METHODS[name].defaults)   # the message lists the allowed params


@pytest.mark.parametrize("name", ALL)
def test_bad_values_are_named(name):
    defaults = methods.METHODS[name].defaults
    assert _error_params(name, {"lr": 0}) == ["lr"]
    assert _error_params(name, {"lr": -0.1}) == ["lr"]
    assert _error_params(name, {"epochs": "5"}) == ["epochs"]
    assert _error_params(name, {"epochs": 2.5}) == ["epochs"]
    assert _error_params(name, {"batch_size": 0}) == ["batch_size"]
    # every non-negative float param rejects a negative value; a mix reports each bad param once
    floats = [k for k, v in defaults.items() if isinstance(v, float) and not isinstance(v, bool)]
    for key in floats:
        assert _error_params(name, {key: -1.0}) == [key]
    # (a gradient-free method such as svd has no lr/epochs/momentum: those are then unknown, still named once)
    expected = ["epochs", "lr"] + ([] if "momentum" in defaults else ["momentum"])
    assert sorted(_error_params(name, {"lr": 0.0, "epochs": "x", "momentum": 0.5})) == expected


def test_trw_specific_params():
    assert _error_params("trw", {"lam": -1.0}) == ["lam"]
    assert _error_params("trw", {"lam": -1}) == ["lam"]
    assert _error_params("trw", {"temperature": 0.0}) == ["temperature"]
    assert _error_params("trw", {"similarity": "no_such_similarity"}) == ["similarity"]
    assert _error_params("trw", {"rank": 0}) == ["rank"]
    valid = {"lam": 0, "temperature": 0.05, "rank": 3, "similarity": "weight_pca_cosine", "epochs": 1, "lr": 1}
    assert methods.check_params("trw", valid) == []
    assert methods.check_params("trw", {"rank": None}) == []


@pytest.mark.parametrize("name", ALL)
def test_resolve_params_fills_defaults(name):
    assert methods.resolve_params(name, {}) == methods.METHODS[name].defaults


def test_resolve_params_converts_ints_to_float_defaults():
    resolved = methods.resolve_params("trw", {"lr": 1, "lam": 5, "epochs": 3})
    assert resolved["lr"] == 1.0 and type(resolved["lr"]) is float
    assert resolved["lam"] == 5.0 and type(resolved["lam"]) is float
    assert resolved["epochs"] == 3 and type(resolved["epochs"]) is int
    defaults = methods.METHODS["trw"].defaults
    for key in set(defaults) - {"lr", "lam", "epochs"}:
        assert resolved[key] == defaults[key]
    assert methods.METHODS["trw"].defaults["lam"] == 10.0     # the registry's defaults are not mutated


def test_bounds_narrow_a_params_range():
    assert [k for k, _ in methods.check_params("salun", {"fraction": 1.5})] == ["fraction"]
    assert "[0.0, 1.0]" in methods.check_params("salun", {"fraction": 1.5})[0][1]
    assert methods.check_params("salun", {"fraction": 1.0}) == []
    assert [k for k, _ in methods.check_params("trw_2r", {"layers": 0})] == ["layers"]


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_epoch_report_hands_over_the_model_being_unlearned(name, tiny_problem):
    """Searches evaluate the model at every log_epoch (ASHA stops bad trials on it): a method that
    trains in epochs must pass the model it trains, and the last one must be what it returns (up to
    a final surgery such as bu_expand's extra neuron, removed after training)."""
    calls = []
    task = tiny_problem.task(seed=0)
    task.log_epoch = lambda epoch, metrics, model=None: calls.append((epoch, model))
    params = {"epochs": 2} if "epochs" in methods.METHODS[name].defaults else {}
    result = methods.unlearn(name, task, params)
    if "epochs" not in methods.METHODS[name].defaults:
        return   # gradient-free (svd): evaluated once, at the end
    assert calls, f"{name} trains in epochs but never calls log_epoch"
    assert all(isinstance(model, torch.nn.Module) for _, model in calls), f"{name} reports an epoch without its model"
    assert [epoch for epoch, _ in calls] == list(range(1, len(calls) + 1))
    last = calls[-1][1]
    if models.final_layer(last).out_features == tiny_problem.num_classes:
        assert last is result, f"{name}: the last model reported is not the one returned"
