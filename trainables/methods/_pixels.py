"""Pixel space for input-space attacks (BU-shrink's FGSM, L2UL's PGD).

Methods see model inputs: for MNIST, CIFAR and Tiny-ImageNet those are (pixels/255 − μ)/σ per channel
(trainables.data.model_input), not pixels in [0, 1]. The attacks' ε and their [0, 1] clamp are in
pixel units (the papers' units; the reference code attacks a model whose first layer normalises), so an
attack maps its inputs back to pixels, attacks `model ∘ normalise` there, and returns model inputs.
Datasets whose inputs are not normalised pixels (digits, toy2d; a task without a dataset) have no
stats: every function here is then the identity, so those results do not change.
"""
import torch

from trainables import data


def pixel_stats(task):
    """(mean, std) of the task's dataset as (1, C, 1, 1) tensors on its device; None when not normalised."""
    info = data.get_info(task.dataset) if task.dataset else None
    if info is None or info.mean is None:
        return None
    mean, std = (torch.tensor(v, dtype=torch.float32, device=task.device).view(1, -1, 1, 1)
                 for v in (info.mean, info.std))
    return mean, std


def to_pixels(x, stats):
    """Model inputs -> pixels in [0, 1] units (up to float rounding)."""
    return x if stats is None else x * stats[1].to(x) + stats[0].to(x)


def to_inputs(pixels, stats):
    """Pixels -> model inputs, as trainables.data.model_input normalises them."""
    return pixels if stats is None else (pixels - stats[0].to(pixels)) / stats[1].to(pixels)


def on_pixels(model, stats):
    """`model` as a function of pixels."""
    return model if stats is None else (lambda pixels: model(to_inputs(pixels, stats)))
