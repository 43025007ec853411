"""Dataset registry and splits, model registry, and the shared training loop."""
import copy
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables import archs, data, models
from trainables.recipe import Recipe
from trainables.train import seed_everything, train_classifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


# ---------------------------------------------------------------- data

def test_digits_tensors(digits):
    info = digits.info
    assert info.num_classes == 10 and len(info.class_names) == 10
    assert info.input_shape == (1, 8, 8)
    for x, y in ((digits.train_x, digits.train_y), (digits.test_x, digits.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert sorted(torch.unique(y).tolist()) == list(range(10))
    assert len(digits.train_x) + len(digits.test_x) == 1797


def test_digits_split_is_fixed_across_loads(digits):
    again = data.load("digits")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(digits, name), getattr(again, name)), name


def test_forget_split_single_class(digits):
    labels = digits.train_y.numpy()
    split = data.forget_split(labels, [8])
    assert np.all(np.diff(split.retain) > 0) and np.all(np.diff(split.forget) > 0)   # sorted, unique
    assert np.intersect1d(split.retain, split.forget).size == 0
    assert np.array_equal(np.sort(np.concatenate([split.retain, split.forget])), np.arange(len(labels)))
    assert np.array_equal(split.forget, np.flatnonzero(labels == 8))
    assert not np.any(labels[split.retain] == 8)


def test_forget_split_multi_class(digits):
    labels = digits.train_y.numpy()
    split = data.forget_split(labels, [3, 1, 8])
    assert np.array_equal(split.forget, np.flatnonzero(np.isin(labels, [1, 3, 8])))
    assert np.array_equal(split.retain, np.flatnonzero(~np.isin(labels, [1, 3, 8])))
    # the order of the forget set does not change the split
    assert data.forget_split(labels, [8, 3, 1]).hash == split.hash


def test_forget_split_hash_stable_and_distinct(digits):
    labels = digits.train_y.numpy()
    first = data.forget_split(labels, [8])
    assert data.forget_split(labels.copy(), [8]).hash == first.hash
    assert isinstance(first.hash, str) and first.hash
    hashes = {data.forget_split(labels, forget).hash for forget in ([8], [3], [3, 8], [0, 1, 2])}
    assert len(hashes) == 4


def test_class_index_accepts_index_and_name():
    info = data.get_info("digits")
    assert data.class_index(info, 8) == 8
    assert data.class_index(info, np.int64(3)) == 3
    assert data.class_index(info, "8") == 8


@pytest.mark.parametrize("bad", [10, -1, "eight", "10"])
def test_class_index_rejects_non_classes(bad):
    info = data.get_info("digits")
    with pytest.raises(ValueError, match="0..9"):
        data.class_index(info, bad)


def test_unknown_dataset_names_registered():
    with pytest.raises(KeyError, match="digits"):
        data.load("no_such_dataset")


# ---------------------------------------------------------------- models

# every (dataset, arch) pair a grid can hold: the conv nets on every image dataset they take, the mlp on the
# 2-D toy data and on digits. Each pair builds its model once (VGG-19 takes ~1 s of a core to build).
IMAGE_DATASETS = [name for name, info in sorted(data.DATASETS.items()) if min(info.input_shape[1:]) >= 8]
PAIRS = [(dataset, arch) for dataset in IMAGE_DATASETS for arch in sorted(models.MODELS)
         if arch != "mlp" and archs.supports(arch, data.DATASETS[dataset].input_shape)] + \
        [("toy2d", "mlp"), ("digits", "mlp")]


@pytest.mark.parametrize("dataset,arch", PAIRS, ids=[f"{d}-{a}" for d, a in PAIRS])
def test_every_dataset_and_arch_pair_gives_logits_gradients_and_a_final_logit_layer(dataset, arch):
    info = data.get_info(dataset)
    torch.manual_seed(0)
    model = models.build(arch, info.num_classes, info.input_shape).train()   # BatchNorm in train mode: batch 2 is fine
    out = model(torch.rand(2, *info.input_shape))
    assert out.shape == (2, info.num_classes)
    F.cross_entropy(out, torch.tensor([0, info.num_classes - 1])).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{dataset}/{arch}: no (finite) gradient for {missing}"
    # TRW reads class rows from the final layer: it must be the layer that produces the logits
    layer = models.final_layer(model.eval())
    assert isinstance(layer, nn.Linear) and layer.out_features == info.num_classes
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(1.5)
        assert torch.equal(model(torch.rand(2, *info.input_shape)), torch.full((2, info.num_classes), 1.5))


def test_the_pairs_cover_the_papers_datasets_and_archs():
    assert {("mnist", "resnet18"), ("mnist", "vgg19"), ("cifar100", "vgg19"), ("tinyimagenet", "resnet18_imagenet"),
            ("tinyimagenet", "resnet18")} <= set(PAIRS)


def test_an_arch_with_fixed_input_channels_rejects_others():
    assert not archs.supports("resnet18_imagenet", (1, 28, 28)) and archs.supports("resnet18_imagenet", (3, 64, 64))
    with pytest.raises(ValueError, match="3-channel"):
        models.build("resnet18_imagenet", 10, (1, 28, 28))


def test_unknown_arch_names_registered():
    with pytest.raises(KeyError) as error:
        models.build("no_such_arch", 10, (1, 8, 8))
    for name in models.MODELS:
        assert name in str(error.value)


# ---------------------------------------------------------------- training

RECIPE = Recipe(epochs=4, lr=0.05, batch_size=64, lr_step=2)   # lr steps at epoch 2: resume must restore it


@pytest.fixture(scope="module")
def subset(digits):
    return digits.train_x[:384], digits.train_y[:384]


@pytest.fixture(scope="module")
def initial_model():
    seed_everything(0)
    return models.build("small_cnn", 10, (1, 8, 8))


def _train(initial, subset, seed, recipe=RECIPE, **kwargs):
    model = copy.deepcopy(initial)
    train_classifier(model, *subset, recipe, generator=torch.Generator().manual_seed(seed), device=CPU, **kwargs)
    return model


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_train_classifier_deterministic_under_seed(initial_model, subset):
    first = _train(initial_model, subset, seed=0)
    _assert_same_state(first, _train(initial_model, subset, seed=0))
    other = _train(initial_model, subset, seed=1)
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())


def test_train_classifier_resume_matches_uninterrupted(initial_model, subset):
    straight = _train(initial_model, subset, seed=0)

    class Interrupted(Exception):
        pass

    saved = {}

    def on_epoch(epoch, metrics, snapshot):
        if epoch == 2:
            buffer = io.BytesIO()                   # serialised, as trial.py checkpoints it
            torch.save(snapshot(), buffer)
            saved["state"] = buffer.getvalue()
            raise Interrupted

    with pytest.raises(Interrupted):
        _train(initial_model, subset, seed=0, on_epoch=on_epoch)
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)   # as trial.py loads checkpoints
    assert state["epoch"] == 2

    # a fresh process: other initial weights and another generator seed, all replaced by the state
    seen = []
    torch.manual_seed(123)
    resumed = models.build("small_cnn", 10, (1, 8, 8))
    train_classifier(resumed, *subset, RECIPE, generator=torch.Generator().manual_seed(99), device=CPU,
                     state=state, on_epoch=lambda epoch, metrics, snapshot: seen.append(epoch))
    assert seen == [3, 4]
    _assert_same_state(straight, resumed)
