"""Training loop shared by originals, Retrain models and fine-tuning unlearning methods.

Everything is in-memory tensors; a CPU Generator seeded per run drives shuffling and augmentation,
so a run is deterministic under its seed on any device (and resumable: the generator state goes
into checkpoints).

Two ways to run the same loop (`Speed`): the plain path indexes batches on the host and copies each
to the device, in float32; the fast path (default on CUDA) holds the whole training set on the
device (uint8 images: CIFAR-10 is 150 MB), augments on the device, and runs channels_last with
bf16 autocast (optionally torch.compile). bench/train_throughput.py measures both against a
torchvision DataLoader.
"""
import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Speed:
    """How the loop runs on its device; changes nothing but float rounding (bf16) and speed."""
    data_on_device: bool = False   # move the whole training set to the device once, index it there
    channels_last: bool = False    # NHWC convolutions (tensor cores); model and batches
    bf16: bool = False             # torch.autocast(bfloat16) around forward + loss; CUDA only
    compile: bool = False          # model.compile() (in place: state_dict keys unchanged)


def speed_for(device, fast_path="auto", compile=False):
    """fast_path 'auto' = 'on' on CUDA, 'off' elsewhere. On CPU 'on' only keeps data in place
    (it already is): channels_last/bf16 do not pay off on CPU cores."""
    on = fast_path == "on" or (fast_path == "auto" and device.type == "cuda")
    cuda = on and device.type == "cuda"
    return Speed(data_on_device=on, channels_last=cuda, bf16=cuda, compile=bool(compile) and on)


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


# The fast path's pieces, shared by run_epochs and the methods with a loop of their own (scar), so
# every method trains on the same numeric path as `finetune` (issue 12: Figure 5's times).
def speed_data(speed, device, *tensors):
    """The training tensors, moved to the device once when the fast path holds the data there."""
    return tuple(t.to(device) for t in tensors) if speed.data_on_device else tensors


def speed_model(model, speed):
    """`model` (in place) in the memory format its batches get: channels_last on the fast path."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def speed_batch(xb, speed):
    """A batch already on the device, in the model's memory format (images only: 4-D)."""
    return xb.contiguous(memory_format=torch.channels_last) if speed.channels_last and xb.dim() == 4 else xb


def speed_autocast(speed, device):
    """The context for forward + loss: bf16 autocast on the fast path, nothing otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if speed.bf16 else contextlib.nullcontext()


def run_epochs(model, x, targets, loss_fn, optimizer, *, epochs, batch_size, generator, device,
               scheduler=None, start_epoch=0, augment=None, after_step=None, on_epoch=None, speed=Speed(),
               prepare=None):
    """Train `model` in place for epochs [start_epoch, epochs) on (x, targets) with `loss_fn`.

    targets may be labels (N,) or soft targets (N, C): anything indexed along dim 0.
    augment(xb, generator) turns a batch (on the device) into model input (e.g. crop + flip, then
    normalise uint8 pixels); prepare(xb) does the normalising alone (an unlearning method's
    task.prepare: x stay as stored, e.g. uint8, on the device). after_step() runs after each optimizer step (e.g. a hard mask);
    on_epoch(epoch, metrics) after each epoch, with epoch counted from 1.
    """
    n = len(x)
    x, targets = speed_data(speed, device, x, targets)
    speed_model(model, speed)
    for epoch in range(start_epoch, epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        # the loss is summed on the device and read once per epoch: a float() per step would
        # synchronise the GPU every step
        total = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size].to(x.device)
            xb, yb = x[index].to(device, non_blocking=True), targets[index].to(device, non_blocking=True)
            if augment is not None:
                xb = augment(xb, generator)
            if prepare is not None:
                xb = prepare(xb)
            xb = speed_batch(xb, speed)
            with speed_autocast(speed, device):
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += loss.detach().float() * len(index)
        if scheduler is not None:
            scheduler.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, {"train_loss": float(total) / max(n, 1),
                                 "lr": optimizer.param_groups[0]["lr"]})


def train_classifier(model, x, y, recipe, *, generator, device, state=None, augment=None, on_epoch=None,
                     speed=Speed()):
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

    if speed.compile:
        model.compile()
    run_epochs(model, x, y, F.cross_entropy, optimizer, epochs=recipe.epochs, batch_size=recipe.batch_size,
               generator=generator, device=device, scheduler=scheduler, start_epoch=start_epoch,
               augment=augment, on_epoch=epoch_done, speed=speed)
    return model


@torch.no_grad()
def predict_logits(model, x, device, batch_size=1024, prepare=None):
    """Eval-mode float32 logits of x as a CPU tensor. prepare(batch) turns stored inputs (e.g. uint8
    pixels) into model input on the device."""
    model.eval()
    prepare = prepare or (lambda batch: batch)
    return torch.cat([model(prepare(x[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(x), batch_size)])
