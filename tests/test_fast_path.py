"""The fast training path (trainables/train.py Speed) and its on-device augmentation
(data.random_crop_flip), checked on CPU tensors: the same shapes and statistics as torchvision's
per-sample transforms in a DataLoader, the same training result whether the data is indexed on the
host or in place, and the channels_last / bf16 code paths run. Pretrained weights for
resnet18_imagenet load from a local file."""
import copy
import functools

import pytest
import torch
import torchvision
from torchvision.transforms import v2

from trainables import data, models
from trainables.data import random_crop_flip
from trainables.recipe import Recipe
from trainables.train import Speed, seed_everything, speed_for, train_classifier

CPU = torch.device("cpu")


def _images(n=64, seed=0):
    """uint8 (n, 3, 32, 32) with structure (so crops differ from the original), no zero pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_crop_flip_keeps_shape_and_dtype_and_is_a_window_of_the_padded_image():
    x = _images(16)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        windows = [padded[i, :, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows), i


def test_crop_flip_is_deterministic_under_the_generator_on_any_device():
    x = _images(8)
    a = random_crop_flip(x, torch.Generator().manual_seed(3), padding=4)
    b = random_crop_flip(x.float(), torch.Generator().manual_seed(3), padding=4)
    assert torch.equal(a.float(), b)       # uint8 and float agree: only the (CPU) generator decides


def test_crop_flip_statistics_match_torchvision_dataloader_transforms():
    """Per-pixel zero share (padding), flip share and mean image over many draws, ours vs torchvision's
    RandomCrop(32, padding=4) + RandomHorizontalFlip applied per sample."""
    # one image whose left half is 50 and right half 200: a flip moves the bright half
    image = torch.full((1, 3, 32, 32), 50, dtype=torch.uint8)
    image[..., 16:] = 200
    draws = 4000
    ours = random_crop_flip(image.expand(draws, -1, -1, -1).contiguous(),
                            torch.Generator().manual_seed(0), padding=4).float()
    torch.manual_seed(0)
    reference = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    theirs = torch.stack([reference(image[0]) for _ in range(draws)]).float()
    assert ours.shape == theirs.shape
    for stat in (lambda t: (t == 0).float().mean(), lambda t: (t[..., 0] == 200).float().mean(),
                 lambda t: t.mean()):
        assert float(stat(ours)) == pytest.approx(float(stat(theirs)), rel=0.08, abs=0.01)
    # the mean image: zero padding darkens the border the same way
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=12.0)


def test_speed_for_turns_the_fast_path_on_only_where_it_helps():
    assert speed_for(CPU, "auto") == Speed()
    assert speed_for(CPU, "on") == Speed(data_on_device=True)
    cuda = torch.device("cuda")
    assert speed_for(cuda, "auto") == Speed(True, True, True, False)
    assert speed_for(cuda, "auto", compile=True).compile
    assert speed_for(cuda, "off") == Speed()


@pytest.fixture(scope="module")
def cifar_like():
    x, y = _images(96, seed=1), torch.arange(96) % 4
    info = data.DatasetInfo("fake", 4, tuple("abcd"), (3, 32, 32), loader=None, mean=(0.5,) * 3, std=(0.25,) * 3,
                            crop_padding=4)
    return x, y, info


def _train(info, x, y, speed, epochs=2):
    seed_everything(0)
    model = models.build("small_cnn", 4, (3, 32, 32))
    augment = functools.partial(data.training_input, info)
    losses = []
    train_classifier(model, x, y, Recipe(epochs=epochs, lr=0.05, batch_size=32), generator=torch.Generator().manual_seed(0),
                     device=CPU, augment=augment, speed=speed, on_epoch=lambda e, m, s: losses.append(m["train_loss"]))
    return model, losses


def test_uint8_images_train_the_same_with_data_held_in_place(cifar_like):
    x, y, info = cifar_like
    plain, _ = _train(info, x, y, Speed())
    fast, _ = _train(info, x, y, Speed(data_on_device=True))
    for key, value in plain.state_dict().items():
        assert torch.equal(value, fast.state_dict()[key]), key


def test_channels_last_and_bf16_paths_run_and_train(cifar_like):
    x, y, info = cifar_like
    plain, _ = _train(info, x, y, Speed())
    nhwc, _ = _train(info, x, y, Speed(channels_last=True))
    for key, value in plain.state_dict().items():   # same maths, other memory layout: float rounding only
        assert torch.allclose(value, nhwc.state_dict()[key], atol=1e-4), key
    conv = next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    _, losses = _train(info, x, y, Speed(bf16=True), epochs=4)     # autocast on CPU exercises the same code
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# ---------------------------------------------------------------- pretrained weights

def test_resnet18_imagenet_loads_local_weights_except_the_head(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()                       # stands in for the ImageNet weights
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(imagenet.state_dict(), path)
    model = models.build("resnet18_imagenet", 200, (3, 64, 64))
    head = copy.deepcopy(model.fc.state_dict())
    models.load_pretrained("resnet18_imagenet", model, str(path))
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, imagenet.layer4[1].bn2.running_mean)
    assert model.fc.out_features == 200 and torch.equal(model.fc.weight, head["weight"])
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)


def test_pretrained_weights_missing_offline_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = models.build("resnet18_imagenet", 10, (3, 64, 64))
    with pytest.raises(FileNotFoundError, match="download") as error:
        models.load_pretrained("resnet18_imagenet", model)
    assert str(tmp_path / "hub" / "checkpoints") in str(error.value) and "data: {weights: PATH}" in str(error.value)
    with pytest.raises(FileNotFoundError, match="data.weights"):
        models.load_pretrained("resnet18_imagenet", model, str(tmp_path / "nope.pth"))
    assert models.load_pretrained("resnet18", model) is model       # archs trained from scratch: a no-op
