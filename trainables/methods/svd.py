"""SVD unlearning (Kodge et al., "Deep Unlearning"): gradient-free, one projection per conv/linear layer.

For every nn.Conv2d / nn.Linear, the layer's input activations on ~`num_samples` retain samples
(class-balanced) and <= `num_samples` forget samples of the ORIGINAL model (conv inputs unfolded into
patches with the conv's kernel/stride/padding/dilation; <= `max_patches` rows per layer, drawn with the
seed) give, from their SVD, σ̃ = S²/ΣS² and M = U diag(ασ̃/((α−1)σ̃+1)) Uᵀ, with α_r for retain and α_f
for forget. P = I − (M_f − M_f M_r) keeps what the retain set uses and removes the forget-only part;
W ← W Pᵀ (conv weights as (out, in·k·k)). Every projection is computed before any weight changes.

As in the reference code: all conv and linear layers are projected, the final classifier included;
biases are left as they are; the model stays in eval mode, so BatchNorm statistics never change. No
gradients are taken (torch.no_grad throughout). U and S² come from the eigendecomposition of the
Gram matrix AᵀA (float64), accumulated batch by batch: the same U, S² as the SVD of A, without holding
the rows. Retain samples come from the retain train set (the reference took them from a held-out split).
The paper's "10 epochs" budget does not apply to a one-shot projection, so there is no epochs param.
"""
import re
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.methods import register

# (α_r, α_f). CIFAR-10 / CIFAR-100: the paper's and reference scripts' values. Our fallbacks: the
# 10-class datasets (digits, MNIST and its 5,000-digit subset mnist5k) take CIFAR-10's; Tiny-ImageNet
# (200 classes) takes CIFAR-100's, the reference's many-class setting (its ImageNet script used (100, 10)).
ALPHAS = {"cifar10": (100.0, 3.0), "cifar100": (1000.0, 30.0), "digits": (100.0, 3.0),
          "mnist": (100.0, 3.0), "mnist5k": (100.0, 3.0), "tinyimagenet": (1000.0, 30.0)}


def default_alphas(dataset, num_classes):
    """(α_r, α_f) for a dataset name; an unknown name falls back by class count (<= 10: CIFAR-10's)."""
    key = re.sub(r"[^a-z0-9]", "", dataset.lower())
    if key in ALPHAS:
        return ALPHAS[key]
    return ALPHAS["cifar10"] if num_classes <= 10 else ALPHAS["cifar100"]


def scaled_projection(gram, alpha):
    """M = U diag(ασ̃/((α−1)σ̃+1)) Uᵀ from the Gram matrix AᵀA of activation rows A (σ̃ = S²/ΣS²)."""
    eigenvalues, u = torch.linalg.eigh(gram.double())
    ratio = eigenvalues.clamp_min(0) / eigenvalues.clamp_min(0).sum().clamp_min(1e-300)
    importance = alpha * ratio / ((alpha - 1) * ratio + 1)
    return (u * importance) @ u.T


def forget_projection(m_retain, m_forget):
    """P = I − (M_f − M_f M_r): removes forget directions unless the retain set uses them too."""
    identity = torch.eye(len(m_forget), dtype=m_forget.dtype, device=m_forget.device)
    return identity - (m_forget - m_forget @ m_retain)


def projected_layers(model):
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, m in layers.items():
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros"):
            raise ValueError(f"svd supports plain convolutions only; conv {name} uses groups, string padding or a padding_mode")
    return layers


def _input_rows(module, inputs):
    """A layer input as activation rows: unfolded patches (B·L, in·k·k) for a conv, (B·…, d) for a linear."""
    x = inputs[0]
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def layer_grams(model, x, layers, max_rows, batch_size, generator, device, prepare=None):
    """{layer name: AᵀA (float64)} with A <= max_rows input rows per layer, drawn uniformly with `generator`.
    prepare: stored batch -> model input (task.prepare); None: x are model inputs."""
    prepare = prepare or (lambda batch: batch)
    grams, keep, offset = {}, {}, [0]

    def hook(name, module, inputs):
        rows = _input_rows(module, inputs)
        per_sample = rows.shape[0] // inputs[0].shape[0]
        if name not in keep:        # first batch: choose which of the N·L rows of the whole set to use
            total = len(x) * per_sample
            keep[name] = None if total <= max_rows else \
                torch.randperm(total, generator=generator)[:max_rows].sort().values
        if keep[name] is not None:
            start = offset[0] * per_sample
            chosen = keep[name][(keep[name] >= start) & (keep[name] < start + rows.shape[0])] - start
            rows = rows[chosen.to(rows.device)]
        rows = rows.double()
        grams[name] = grams.get(name, 0) + rows.T @ rows

    handles = [m.register_forward_pre_hook(partial(hook, name)) for name, m in layers.items()]
    try:
        model.eval()
        for start in range(0, len(x), batch_size):
            offset[0] = start
            model(prepare(x[start:start + batch_size].to(device)))
    finally:
        for handle in handles:
            handle.remove()
    return grams


def balanced_indices(labels, total, generator):
    """About `total` indices, the same number per class present (all of a class that has fewer)."""
    classes = labels.unique()
    per_class = max(1, total // len(classes))
    picks = []
    for c in classes.tolist():
        index = torch.nonzero(labels == c).flatten()
        picks.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values


@register("svd", types={"alpha_r": float, "alpha_f": float},
          bounds={"num_samples": (1, None), "max_patches": (1, None)},
          alpha_r=None, alpha_f=None, num_samples=900, max_patches=10000, batch_size=128)
def run(task, params):
    fallback_r, fallback_f = default_alphas(task.dataset, task.num_classes)
    alpha_r = params["alpha_r"] if params["alpha_r"] is not None else fallback_r
    alpha_f = params["alpha_f"] if params["alpha_f"] is not None else fallback_f
    model = task.fresh_copy().eval()
    layers = projected_layers(model)
    generator = task.generator()
    retain = task.retain_x[balanced_indices(task.retain_y, params["num_samples"], generator)]
    forget = task.forget_x[torch.randperm(len(task.forget_x), generator=generator)[:params["num_samples"]]]
    collect = partial(layer_grams, model, layers=layers, max_rows=params["max_patches"],
                      batch_size=params["batch_size"], generator=generator, device=task.device, prepare=task.prepare)
    with torch.no_grad():
        grams_retain, grams_forget = collect(retain), collect(forget)   # both before any weight changes
        for name, layer in layers.items():
            projection = forget_projection(scaled_projection(grams_retain[name], alpha_r),
                                           scaled_projection(grams_forget[name], alpha_f))
            weight = layer.weight.flatten(1).double() @ projection.T
            layer.weight.copy_(weight.view_as(layer.weight).to(layer.weight.dtype))
    return model
