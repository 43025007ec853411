"""SalUn (Fan et al., "SalUn: empowering machine unlearning via gradient-based weight saliency").

1. Saliency: one pass over the forget set with the original weights (eval mode, as the reference
   `generate_mask.py`), summing the gradient of −CE over the batches; saliency = |sum|.
2. Mask: the top `fraction` (default 0.5) of ALL parameter entries (weights, biases, BatchNorm
   affine), ranked globally across tensors; exactly floor(fraction · N) entries, ties broken by
   position (stable sort), so the mask is deterministic.
3. RL with a hard mask: forget samples relabelled among the retained classes + CE on retain (rl.py),
   and after every optimizer step the entries outside the mask are restored to their start values and
   their momentum is zeroed, so weight decay and momentum cannot move them: they end bit-identical.
BatchNorm running statistics are buffers, not weights: they update in train mode as in the reference.
Departures from the reference code: its mask pass calls optimizer.step() between batches (the weights
drift while gradients are summed); we keep the original weights fixed. It masks gradients and restores
unmasked weights; we only restore (same effect on every entry, exact by construction).
Defaults: 15 epochs (paper B.2); lr 0.013, the reference README's CIFAR-10 SalUn value.
"""
import torch
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods.rl import relabelled_union
from trainables.train import run_epochs, sgd


def saliency(model, x, y, batch_size, device, prepare=None):
    """|Σ_batches ∇θ (−CE)| on (x, y) at the model's current weights, one tensor per parameter.
    prepare: stored batch -> model input (task.prepare); None: x are model inputs."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    model.eval()
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        xb = xb if prepare is None else prepare(xb)
        loss = -F.cross_entropy(model(xb), yb)
        for acc, grad in zip(total, torch.autograd.grad(loss, params)):
            acc += grad
    return [g.abs() for g in total]


def global_top_mask(scores, fraction):
    """Boolean masks (shaped like `scores`) selecting the floor(fraction · N) largest entries overall."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flat = torch.cat([s.flatten() for s in scores])
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.sort(flat, descending=True, stable=True).indices[:int(fraction * len(flat))]] = True
    return [m.view_as(s) for m, s in zip(torch.split(keep, [s.numel() for s in scores]), scores)]


# version 2: the task's numeric path (bf16/channels_last on GPU; was fp32)
@register("salun", version=2, bounds={"fraction": (0.0, 1.0)}, epochs=15, lr=0.013, batch_size=128, momentum=0.9, weight_decay=5e-4, fraction=0.5)
def run(task, params):
    model = task.fresh_copy()
    masks = global_top_mask(saliency(model, task.forget_x, task.forget_y, params["batch_size"], task.device,
                                     task.prepare), params["fraction"])
    weights = [p for p in model.parameters() if p.requires_grad]
    starts = [p.detach().clone() for p in weights]
    optimizer = sgd(model, params["lr"], params["momentum"], params["weight_decay"])

    @torch.no_grad()
    def hard_mask():                       # unmasked entries back to the start, their momentum to zero
        for p, keep, start in zip(weights, masks, starts):
            p.copy_(torch.where(keep, p, start))
            buffer = optimizer.state.get(p, {}).get("momentum_buffer")
            if buffer is not None:
                buffer.masked_fill_(~keep, 0.0)

    x, y = relabelled_union(task, task.generator())
    generator = task.generator()
    start_epoch = task.resume_loop(model, optimizer, generator)

    def on_epoch(epoch, metrics):
        task.log_epoch(epoch, metrics, model)
        task.end_epoch(epoch, model, optimizer, generator)
    run_epochs(model, x, y, F.cross_entropy, optimizer, epochs=params["epochs"], batch_size=params["batch_size"],
               generator=generator, device=task.device, after_step=hard_mask, start_epoch=start_epoch,
               on_epoch=on_epoch, speed=task.speed, prepare=task.prepare)
    return model
