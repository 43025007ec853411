"""Model registry: builders (num_classes, input_shape) -> nn.Module, timm-style one entry each.

The final layer of every model is its last nn.Linear (`final_layer`): TRW's similarity scores read
its weight rows. torchvision is imported by the builders that use it: importing it costs ~4 s of a
core (it pulls in torch._dynamo; bench/import_time.py), paid by every Ray worker that runs a trial.
"""
import importlib
import math
from pathlib import Path

import torch
import torch.nn as nn

# archs: what an arch accepts (archs.supports), without torch; data_cache: weights staged in a bucket
from trainables import archs, data_cache, store

MODELS = {}


def register(name, channels=None):
    """A builder (num_classes, input_shape) -> nn.Module; `channels`: the only input channel count it takes."""
    def wrap(builder):
        archs.declare(name, channels)
        MODELS[name] = builder
        return builder
    return wrap


def build(name, num_classes, input_shape):
    if name not in MODELS:
        raise KeyError(f"unknown arch {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name](num_classes, tuple(input_shape))


def final_layer(model):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear final layer")
    return linears[-1]


def features_and_logits(model, x):
    """(embedding, logits): the embedding is the input of the final linear layer (penultimate features)."""
    captured = {}
    hook = final_layer(model).register_forward_hook(lambda module, inputs, output: captured.update(z=inputs[0]))
    try:
        logits = model(x)
    finally:
        hook.remove()
    return captured["z"], logits


def _conv_bn_relu(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register("small_cnn")
def small_cnn(num_classes, input_shape):
    """3 conv blocks + global pool + linear: ~25k params, the CPU/demo default (digits: ~1 s/epoch)."""
    channels = input_shape[0]
    return nn.Sequential(
        *_conv_bn_relu(channels, 16), *_conv_bn_relu(16, 32), nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, num_classes))


@register("resnet18")
def resnet18(num_classes, input_shape):
    """torchvision ResNet-18, CIFAR-style stem: 3x3 stride-1 first conv and no max-pool."""
    import torchvision
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register("vgg19")
def vgg19(num_classes, input_shape):
    """torchvision VGG-19 (BN), CIFAR-style: global pool + one linear head (512 -> classes).

    Max-pools beyond what the input side allows are dropped (five halvings need 32 px; 8 px keeps 3).
    """
    import torchvision
    model = torchvision.models.vgg19_bn(num_classes=num_classes)
    layers = list(model.features)
    layers[0] = nn.Conv2d(input_shape[0], 64, kernel_size=3, padding=1)
    pools_allowed = int(math.log2(min(input_shape[1:])))
    kept, pools = [], 0
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            pools += 1
            if pools > pools_allowed:
                continue
        kept.append(layer)
    model.features = nn.Sequential(*kept)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(512, num_classes)
    return model


@register("resnet18_imagenet", channels=3)
def resnet18_imagenet(num_classes, input_shape):
    """torchvision ResNet-18 with its ImageNet stem (7x7 stride-2 conv + max-pool) and a new head: the
    paper's pretrained model for Tiny-ImageNet (64 px -> 2x2 final maps). Weights: load_pretrained."""
    if input_shape[0] != 3:
        raise ValueError(f"resnet18_imagenet needs 3-channel inputs (ImageNet weights), got {input_shape}")
    import torchvision
    model = torchvision.models.resnet18()
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


# arch -> the torchvision weights enum entry (in torchvision.models) its originals and Retrain models start from
PRETRAINED = {"resnet18_imagenet": ("ResNet18_Weights", "IMAGENET1K_V1")}


def load_pretrained(arch, model, weights_path=None, download=False):
    """Start `model` from its arch's ImageNet weights (all but the new classification head); a no-op
    for archs trained from scratch. weights_path: a .pth state_dict (offline), a local file or a bucket
    URI staged by `unlearn-grid stage-data --weights`; else torchvision's cache (torch.hub dir),
    downloading there only when `download` is true."""
    if arch not in PRETRAINED:
        return model
    enum, entry = PRETRAINED[arch]
    weights = getattr(getattr(importlib.import_module("torchvision.models"), enum), entry)
    if weights_path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.exists() and not download:
            raise FileNotFoundError(
                f"{arch} starts from ImageNet weights, expected at {cached}; set data: {{download: true}} in "
                f"the grid (needs network) or download {weights.url} and set data: {{weights: PATH}}")
        state = weights.get_state_dict(progress=False)
    else:
        if store.is_uri(weights_path):   # staged in a bucket: fetched once per node, its SHA-256 checked
            weights_path = data_cache.fetch_file(weights_path)
        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"data.weights: no file at {weights_path} (expected {Path(weights.url).name}, "
                                    f"from {weights.url})")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    head = final_layer(model)
    head_names = {name for name, module in model.named_modules() if module is head}
    state = {k: v for k, v in state.items() if k.rsplit(".", 1)[0] not in head_names}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k.rsplit(".", 1)[0] not in head_names for k in missing):
        raise ValueError(f"{arch}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    return model


@register("mlp")
def mlp(num_classes, input_shape):
    """flatten -> 64 -> ReLU -> 64 -> ReLU -> classes, for any input shape (the toy2d model; ~4.5k params on 2-D)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.ReLU(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, num_classes))
