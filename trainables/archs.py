"""What each architecture accepts, without importing torch: grid validation reads only this.
The builders are in trainables/models.py, whose `register` also declares a plugin's new arch here.
"""

# arch -> the only input channel count it accepts, or None for any (pretrained weights fix it)
ARCHS = {
    "small_cnn": None,
    "resnet18": None,
    "vgg19": None,
    "resnet18_imagenet": 3,     # ImageNet weights: RGB inputs only
    "mlp": None,
}


def declare(name, channels=None):
    """Record arch `name` (models.register calls this); a built-in arch must keep its channels here."""
    if name in ARCHS and ARCHS[name] != channels:
        raise ValueError(f"arch {name!r} is declared with channels={ARCHS[name]} in trainables/archs.py, "
                         f"registered with channels={channels}")
    ARCHS[name] = channels


def supports(name, input_shape):
    """Whether arch `name` can take inputs of this (C, H, W) (grid validation asks before any trial)."""
    channels = ARCHS.get(name)
    return channels is None or channels == input_shape[0]
