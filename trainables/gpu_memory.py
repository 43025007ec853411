"""GPU memory of a trial: the allocator cap for its share of a GPU, and an estimate from shapes of what
a recipe keeps on the device.

Cap. A grid's `resources.gpu` of 0.25 lets Ray pack four trials on one GPU, each its own process with
its own CUDA context. The context (the driver's state, loaded kernels, library handles) lives outside
PyTorch's caching allocator, so outside torch.cuda.set_per_process_memory_fraction: a cap of
share × total would let four trials reach the whole GPU *plus* four contexts. `allocator_fraction`
leaves one context per trial: n trials with n · share <= 1 then hold at most
n · (fraction · total + context) = n · share · total <= total.

Estimate. `peak_estimate` adds up, from shapes alone (the model is built on the `meta` device: no
weights, no data), what each stage and each unlearning method keeps on the GPU at its peak on the fast
path (trainables/train.py: the training set held on the device as stored, uint8 pixels for images),
and names the worst. It counts allocated tensors, conservatively (every module's output counted as
kept for the backward pass, in float32 although the fast path runs bf16); the caching allocator's
rounding and fragmentation and cuDNN's workspaces come on top (ALLOCATOR_MARGIN). tests/test_gpu_memory.py
holds the bundled Tiny-ImageNet and CIFAR-100 recipes against a 0.25 share of a 24 GB GPU;
docs/performance.md#gpu-memory shows the breakdown.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from trainables import models

GiB = 2 ** 30
# What each CUDA process holds outside the caching allocator. With lazy module loading
# (CUDA_MODULE_LOADING=LAZY: PyTorch's default since 1.13, CUDA's since 12.2) a bare context is ~0.3 GB
# (pytorch/pytorch#86509: 287 MB lazy, 667 MB eager); a process that has trained (its convolution and
# GEMM kernels loaded, cuBLAS/cuDNN handles made) holds ~0.5 GB. 0.75 GiB keeps a margin above that.
CUDA_CONTEXT_BYTES = 3 * GiB // 4
# The estimate must fit in this fraction of the allocator cap: the caching allocator rounds blocks up
# and fragments, and cuDNN's convolution workspaces come from the same pool (it picks algorithms whose
# workspace fits what is left, so a tight cap costs speed before it fails).
ALLOCATOR_MARGIN = 0.8
# Batch of the input-space attacks, taken with gradients: l2ul.adversarial_set's `chunk` and
# bu_shrink.nearest_wrong_labels' `batch_size` (tests/test_gpu_memory.py checks both).
ATTACK_BATCH = 512
# SCAR's surrogate pool (its num_surrogates default), float32 model inputs on the device
SCAR_SURROGATES = 1024
# Batch of the forward-only passes (predict_logits' default: teacher logits, evaluation, similarities)
EVAL_BATCH = 1024
FLOAT32, FLOAT64, INT64 = 4, 8, 8


def allocator_fraction(share, total_bytes, context_bytes=CUDA_CONTEXT_BYTES):
    """The fraction of a GPU of `total_bytes` that a trial of `share` of it (resources.gpu) lets its caching
    allocator hold (torch.cuda.set_per_process_memory_fraction): its share less one CUDA context.
    None for a whole GPU or more (share >= 1: not capped). ValueError when the share cannot even hold the context."""
    if share >= 1:
        return None
    if share <= 0:
        raise ValueError(f"resources.gpu must be > 0 for a trial on a GPU, got {share}")
    room = share * total_bytes - context_bytes
    if room <= 0:
        raise ValueError(
            f"resources.gpu {share} is {share * total_bytes / GiB:.2f} GiB of this {total_bytes / GiB:.1f} GiB GPU, "
            f"no more than the {context_bytes / GiB:.2f} GiB CUDA context of each trial's process: "
            f"ask for resources.gpu of at least {2 * context_bytes / total_bytes:.2f} (or 1)")
    return room / total_bytes


@dataclass(frozen=True)
class Shapes:
    """What the estimate reads (registries and a grid file; nothing is loaded)."""
    arch: str
    num_classes: int
    input_shape: tuple           # (C, H, W)
    n_train: int                 # train split
    n_forget: int                # train samples of the largest forget set
    batch_size: int              # the largest batch a training step takes (recipe and methods)
    stored_bytes: int = 1        # bytes per stored input element: 1 for uint8 pixels, 4 for float32

    @classmethod
    def for_grid(cls, info, arch, forget_set_size, batch_size):
        """A grid's cell: `info` a registered DatasetInfo (its train_size), forget sets of up to
        `forget_set_size` classes (treated as class-balanced), stored as the dataset stores them."""
        return cls(arch, info.num_classes, tuple(info.input_shape), info.train_size,
                   info.train_size * forget_set_size // info.num_classes, batch_size,
                   1 if info.mean is not None else FLOAT32)

    def inputs(self, count, element_bytes=FLOAT32):
        return count * math.prod(self.input_shape) * element_bytes


def model_on_meta(shapes):
    with torch.device("meta"):
        return models.build(shapes.arch, shapes.num_classes, shapes.input_shape)


def activation_bytes(model, shapes, batch_size):
    """(kept, largest): float32 bytes of one batch and of every leaf module's output on it, what autograd
    may keep for the backward pass (an upper bound: an in-place ReLU is counted again), and the largest one."""
    sizes = [shapes.inputs(batch_size)]
    record = lambda module, inputs, output: sizes.append(output.numel() * FLOAT32)
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        model.train()
        model(torch.empty((batch_size, *shapes.input_shape), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes), max(sizes)


def gram_dims(model):
    """SVD's Gram matrix side per projected layer: in·kh·kw for a conv, in_features for a linear."""
    return [m.in_channels * math.prod(m.kernel_size) if isinstance(m, nn.Conv2d) else m.in_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def phases(shapes):
    """{phase: {part: bytes}}: what each stage and method holds on the device at once at its peak."""
    model = model_on_meta(shapes)
    weights = sum(p.numel() for p in model.parameters()) * FLOAT32
    acts, largest = activation_bytes(model, shapes, shapes.batch_size)
    attack_acts, _ = activation_bytes(model, shapes, ATTACK_BATCH)
    _, largest_eval = activation_bytes(model, shapes, EVAL_BATCH)
    dim = models.final_layer(model).in_features          # the embedding SCAR's statistics live in
    step = {"weights": weights, "gradients": weights, "bf16 weight copies (autocast)": weights // 2,
            f"activations, batch {shapes.batch_size}": acts, "backward working set (2 largest)": 2 * largest}
    sgd = {**step, "SGD momentum": weights}
    stored_all = {"stored train set (retain + forget)": shapes.inputs(shapes.n_train, shapes.stored_bytes),
                  "labels": shapes.n_train * INT64}
    unlearn = {"frozen original": weights, **stored_all, **sgd}
    grams = sum(2 * d * d * FLOAT64 for d in gram_dims(model))
    retained = shapes.num_classes - 1
    return {
        "train original / Retrain": {**stored_all, **sgd},
        "ft, rl, ga, l1, bu_expand": unlearn,
        "bu_shrink / l2ul attack": {"frozen original": weights,
                                    f"float32 forget batch + activations, batch {ATTACK_BATCH}": attack_acts},
        "salun": {**unlearn, "start weights + mask": weights + weights // 4},
        "scrub": {**unlearn, "teacher logits (retain + forget)": shapes.n_train * (shapes.num_classes + 1) * FLOAT32},
        "trw, rescale, trw_2r": {**unlearn, "soft targets (N x C)": shapes.n_train * shapes.num_classes * FLOAT32},
        "l2ul": {"frozen original": weights, **sgd, "anchors + penalty weights": 2 * weights,
                 "float32 forget set + adversarial examples": 2 * shapes.inputs(shapes.n_forget)},
        "scar": {"frozen original": weights, **step, "Adam state": 2 * weights,
                 "stored forget set": shapes.inputs(shapes.n_forget, shapes.stored_bytes),
                 f"surrogates ({SCAR_SURROGATES}, float32) + teacher logits":
                     shapes.inputs(SCAR_SURROGATES) + SCAR_SURROGATES * shapes.num_classes * FLOAT32,
                 "second forward (surrogate batch)": acts,
                 "class statistics (K x d x d)": retained * (dim * dim + dim) * FLOAT32,
                 "distances working set (2 x B x K x d)": 2 * shapes.batch_size * retained * dim * FLOAT32},
        "svd": {"frozen original + copy": 2 * weights, "Gram matrices (retain + forget, float64)": grams,
                # eigh's vectors, the two scaled projections, the identity, a product, a difference
                "projection of the largest layer (6 x d^2, float64)": 6 * max(gram_dims(model)) ** 2 * FLOAT64,
                f"activations, batch {shapes.batch_size} (no grad)": 2 * largest},
        "evaluation": {"unlearned model + frozen original": 2 * weights,
                       f"activations, batch {EVAL_BATCH} (no grad, 2 largest)": 2 * largest_eval},
    }


def peak_estimate(shapes):
    """(phase, total bytes, {phase: {part: bytes}}): the phase that needs the most device memory."""
    table = phases(shapes)
    worst = max(table, key=lambda name: sum(table[name].values()))
    return worst, sum(table[worst].values()), table


def breakdown(table, phase):
    """A markdown table of one phase's parts, in GiB."""
    rows = [f"| {part} | {size / GiB:.3f} |" for part, size in sorted(table[phase].items(), key=lambda kv: -kv[1])]
    return "\n".join([f"| {phase} | GiB |", "|---|---:|", *rows,
                      f"| **total** | **{sum(table[phase].values()) / GiB:.3f}** |"])
