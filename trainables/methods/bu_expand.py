"""BU, Boundary Expanding (Chen et al., CVPR 2023): train the forget set into a shadow class, then prune it.

The final linear layer gets one extra output (existing rows copied, the new row Xavier-normal with
zero bias, as in the reference code); the whole network is fine-tuned with CE on the forget set only,
every forget sample labelled with the shadow class C; then the extra output is removed, so the
returned model has the original's architecture and state_dict keys/shapes. With several forget
classes all of them share the one shadow class (the reference code has a single extra neuron).

Budget as in the reference code: SGD lr 1e-5, momentum 0.9, no weight decay, 10 epochs; batch 128 is
the paper's recipe (B.2). As with bu_shrink, at lr 1e-5 on small data the forgetting comes mostly from
BatchNorm running statistics re-estimated on forget-only batches (train mode), as in the reference
(lr 1e-12 gives the same digits result).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods.task import finetune
from trainables.models import final_layer


def _head_name(model):
    head = final_layer(model)
    return next(name for name, module in model.named_modules() if module is head)


def _replace(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def expand_head(model, generator):
    """Add one output to `model`'s final linear layer in place; the first C outputs are unchanged."""
    name, head = _head_name(model), final_layer(model)
    wide = nn.Linear(head.in_features, head.out_features + 1, bias=head.bias is not None)
    wide = wide.to(device=head.weight.device, dtype=head.weight.dtype)
    std = math.sqrt(2.0 / (head.in_features + head.out_features + 1))      # Xavier normal, as the reference
    with torch.no_grad():
        wide.weight[:-1] = head.weight
        wide.weight[-1] = (torch.randn(head.in_features, generator=generator) * std).to(wide.weight)
        if head.bias is not None:
            wide.bias[:-1] = head.bias
            wide.bias[-1] = 0.0
    _replace(model, name, wide)
    return model


def shrink_head(model, num_classes):
    """Keep the first `num_classes` outputs of `model`'s final linear layer, in place."""
    name, head = _head_name(model), final_layer(model)
    narrow = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    narrow = narrow.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        narrow.weight.copy_(head.weight[:num_classes])
        if head.bias is not None:
            narrow.bias.copy_(head.bias[:num_classes])
    _replace(model, name, narrow)
    return model


@register("bu_expand", epochs=10, lr=1e-5, batch_size=128, momentum=0.9, weight_decay=0.0)
def run(task, params):
    model = expand_head(task.fresh_copy(), task.generator())
    shadow = torch.full_like(task.forget_y, task.num_classes)      # every forget sample -> the extra class
    finetune(task, model, task.forget_x, shadow, F.cross_entropy, params)
    return shrink_head(model, task.num_classes)
