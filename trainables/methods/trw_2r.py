"""TRW-2R: the TRW loss (trw.py, same targets and defaults) with only `layers` (default 2) randomly
chosen layers fine-tuned.

OUR interpretation: the paper only says TRW-2R "fine-tunes only randomly chosen layers" (averaged over
trials) and defines it no further. Here:
- a "layer" is a module that directly owns parameters (Conv, Linear, BatchNorm, ...; containers such
  as Sequential or a ResNet block are not layers, their children are);
- `layers` of them are drawn uniformly without replacement by a generator seeded from a SHA-256 of
  (original's seed, unlearning seed, forget classes): deterministic per trial, and different across
  the trials a grid averages over (paper grids have one unlearning seed, so the unlearning seed alone
  gave every trial the same layers: bn1 + fc on ResNet-18); asking for more layers than the model has
  trains them all. The choice is logged as the MLflow param `layers_chosen` (comma-joined names);
- only the chosen layers' parameters reach the optimizer (the others have requires_grad False), so
  weight decay and momentum touch nothing else;
- non-chosen modules that own buffers (BatchNorm running statistics) are held in eval mode while
  training, so they normalise with their running statistics and never update them: every parameter
  and buffer outside the chosen layers ends bit-identical. A chosen BatchNorm trains as usual.
Defaults as trw: 10 epochs, lr 1e-3, λ 10, T 0.1, rank None, weight_pca_cosine similarity (any entry of
trainables.similarity, e.g. centroid_distance, is selectable; targets come from trw.training_targets),
forget_weighting pooled (trw.py's docstring: the loss weighting of forget against retain samples).
"""
import hashlib

import torch
from torch import nn

from trainables.methods import register
from trainables.methods.task import finetune
from trainables.methods.trw import WEIGHTINGS, training_targets
from trainables.similarity import SIMILARITIES
from trainables.train import soft_cross_entropy


LAYER_TYPES = ("any", "weights")          # what a draw may pick (module docstring)
WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
DRAW_KINDS = ("batchnorm_only", "mixed", "weights_only")


def _owns_parameters(module):
    return next(module.parameters(recurse=False), None) is not None


def choose_layers(model, count, generator, layer_types="any"):
    """Names (as in named_modules) of `count` parameter-owning modules drawn by `generator`, in model order;
    layer_types 'weights': only Conv and Linear modules are drawn."""
    if layer_types not in LAYER_TYPES:
        raise ValueError(f"trw_2r layer_types must be one of {list(LAYER_TYPES)}, got {layer_types!r}")
    names = [name for name, module in model.named_modules() if _owns_parameters(module)
             and (layer_types == "any" or isinstance(module, WEIGHT_LAYERS))]
    picks = torch.randperm(len(names), generator=generator)[:count]
    return [names[i] for i in sorted(picks.tolist())]


def draw_kind(model, names):
    """'batchnorm_only' when every drawn layer is a BatchNorm, 'weights_only' when every one is a Conv or
    Linear, else 'mixed' (BatchNorm with weights, or another parameter-owning module)."""
    modules = dict(model.named_modules())
    if all(isinstance(modules[n], nn.modules.batchnorm._BatchNorm) for n in names):
        return "batchnorm_only"
    return "weights_only" if all(isinstance(modules[n], WEIGHT_LAYERS) for n in names) else "mixed"


def layer_generator(task):
    """The generator of a trial's layer draw. hashlib, not hash(): Python salts str hashes per process."""
    key = f"trw_2r layers|{task.original_seed}|{task.seed}|{sorted(int(c) for c in task.forget_classes)}"
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


# version 2: layers drawn from (seed, unlearn_seed, forget set) (was: the unlearning seed only)
@register("trw_2r", version=2, choices={"similarity": tuple(SIMILARITIES), "forget_weighting": WEIGHTINGS,
                                        "layer_types": LAYER_TYPES},
          bounds={"layers": (1, None)}, epochs=10, lr=1e-3, batch_size=128, momentum=0.9, weight_decay=5e-4, lam=10.0,
          temperature=0.1, rank=None, similarity="weight_pca_cosine", forget_weighting="pooled", layers=2,
          layer_types="any")
def run(task, params):
    if params["layers"] < 1:
        raise ValueError(f"trw_2r needs layers >= 1, got {params['layers']}")
    model = task.fresh_copy()
    names = choose_layers(model, params["layers"], layer_generator(task), params["layer_types"])
    task.log_params({"layers_chosen": ",".join(names), "layers_kind": draw_kind(model, names)})
    chosen = set(names)
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if name not in chosen:
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    frozen_stats = [m for name, m in modules.items()
                    if name not in chosen and next(m.buffers(recurse=False), None) is not None]

    def hold_statistics(module, inputs):   # run_epochs calls model.train() each epoch; undo it for these
        for m in frozen_stats:
            m.training = False              # not .eval(): that would recurse into (possibly chosen) children

    handle = model.register_forward_pre_hook(hold_statistics)
    x, targets = training_targets(task, params)
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        finetune(task, model, x, targets, soft_cross_entropy, params, parameters=trainable)
    finally:
        handle.remove()                     # the returned model behaves like any other: no hidden hook,
        for p in model.parameters():        # all parameters trainable again
            p.requires_grad_(True)
    return model
