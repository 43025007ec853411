"""Training loop shared by originals, Retrain models and fine-tuning unlearning methods.

Everything is in-memory tensors; a Generator seeded per run drives shuffling, so a run is
deterministic under its seed (and resumable: the generator state goes into checkpoints).
"""
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Recipe:
    """Paper B.2: SGD, momentum 0.9, weight decay 5e-4, batch 128, StepLR (lr and epochs per grid)."""
    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 10            # StepLR step_size, in epochs
    lr_gamma: float = 0.1

    def as_dict(self):
        return asdict(self)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def soft_cross_entropy(logits, targets):
    """-Σ_k q_k log softmax_k, averaged over the batch; targets are (N, C) distributions."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sgd(model, lr, momentum=0.9, weight_decay=5e-4, parameters=None):
    params = model.parameters() if parameters is None else parameters
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def run_epochs(model, x, targets, loss_fn, optimizer, *, epochs, batch_size, generator, device,
               scheduler=None, start_epoch=0, augment=None, after_step=None, on_epoch=None):
    """Train `model` in place for epochs [start_epoch, epochs) on (x, targets) with `loss_fn`.

    targets may be labels (N,) or soft targets (N, C): anything indexed along dim 0.
    after_step() runs after each optimizer step (e.g. a hard mask); on_epoch(epoch, metrics)
    after each epoch, with epoch counted from 1.
    """
    n = len(x)
    for epoch in range(start_epoch, epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            xb, yb = x[index].to(device), targets[index].to(device)
            if augment is not None:
                xb = augment(xb, generator)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        if scheduler is not None:
            scheduler.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, {"train_loss": total / max(seen, 1),
                                 "lr": optimizer.param_groups[0]["lr"]})


def train_classifier(model, x, y, recipe, *, generator, device, state=None, augment=None, on_epoch=None):
    """Paper recipe (SGD + StepLR, CE) on (x, y). `state` resumes from `training_state(...)`.

    on_epoch(epoch, metrics, snapshot) gets a zero-argument `snapshot` returning the training
    state, so the caller decides when to checkpoint. The snapshot holds the live tensors, not
    copies: serialise it (torch.save) before training continues.
    """
    optimizer = sgd(model, recipe.lr, recipe.momentum, recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.lr_step, gamma=recipe.lr_gamma)
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch = state["epoch"]

    def epoch_done(epoch, metrics):
        if on_epoch is not None:
            on_epoch(epoch, metrics, lambda: {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "epoch": epoch})

    run_epochs(model, x, y, F.cross_entropy, optimizer, epochs=recipe.epochs, batch_size=recipe.batch_size,
               generator=generator, device=device, scheduler=scheduler, start_epoch=start_epoch,
               augment=augment, on_epoch=epoch_done)
    return model


@torch.no_grad()
def predict_logits(model, x, device, batch_size=1024):
    """Eval-mode logits of x as a float32 CPU tensor."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
