"""What a method's `run(task, params)` gets, the common fine-tuning loop, and `unlearn` (torch).

A task holds its inputs as the dataset stores them (`retain_x`, `forget_x`: uint8 pixels for image
datasets, float for digits/toy2d), so a training set held on the GPU takes a quarter of float32's memory
(Tiny-ImageNet's retain set: 1.2 GB, not 4.9 GB). `task.prepare(batch)` turns a batch of them, on any
device, into the float model input (trainables.data.model_input): every forward pass of a method goes
through it. Normalising per batch is elementwise the same as normalising the whole set, so results do not
change (tests/test_method_inputs.py checks every method bitwise against pre-normalised inputs).

The registry (names, params and their checks) is trainables/methods/__init__.py, which imports no torch.
"""
import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from trainables import methods
from trainables.train import Speed, run_epochs, sgd


def stored_is_model_input(batch):
    """The default `prepare`: inputs already are what the model sees (float datasets, pre-normalised tests)."""
    return batch


@dataclass
class UnlearnTask:
    original: nn.Module
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    forget_classes: list
    num_classes: int
    seed: int                  # the unlearning seed (spec unlearn_seed)
    device: torch.device = torch.device("cpu")
    dataset: str = ""          # registered dataset name, for per-dataset defaults (e.g. SVD's alphas)
    # per-epoch sink: log_epoch(epoch, metrics, model); model (the one being unlearned, mid-training) lets
    # a search evaluate it every epoch for early stopping
    log_epoch: Callable = field(default=lambda epoch, metrics, model=None: None)
    speed: Speed = Speed()     # how every method's training runs on the device (trainables.train.Speed; never compiles)
    original_seed: int = 0     # the seed of the original being unlearned (spec seed)
    # what a method chose at run time, logged as MLflow params of its run (e.g. trw_2r's layers_chosen)
    log_params: Callable = field(default=lambda params: None)
    # Resuming a method's epoch loop after its worker died (trainables/checkpoints.py): `resume` is the
    # loop state an earlier attempt of the same trial saved (None on a first attempt); checkpoint(make_state)
    # stores make_state() when the trial's checkpoint is due (a timer, or a spot notice: trainables/trial.py)
    resume: dict = None
    checkpoint: Callable = field(default=lambda make_state: None)
    # stored batch (retain_x/forget_x rows, on any device) -> float model input on that device; see the
    # module docstring. trainables/trial.py passes the dataset's normalisation for uint8 images.
    prepare: Callable = stored_is_model_input

    def fresh_copy(self):
        """A trainable deep copy of the original, on the task's device."""
        model = copy.deepcopy(self.original).to(self.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def generator(self):
        return torch.Generator().manual_seed(self.seed)

    def resume_loop(self, model, optimizer, generator):
        """The epoch a method's loop starts from: 0, or the last checkpointed epoch of an earlier attempt,
        whose model, optimizer, loop generator and global RNG are restored in place. Everything a method
        computes before its loop is a function of the seed, so it is simply computed again."""
        if not self.resume:
            return 0
        model.load_state_dict(self.resume["model"])
        optimizer.load_state_dict(self.resume["optimizer"])
        generator.set_state(self.resume["generator"])
        torch.set_rng_state(self.resume["rng"])
        return self.resume["epoch"]

    def end_epoch(self, epoch, model, optimizer, generator, extra=None):
        """After epoch `epoch` (1-based) of a method's loop: checkpoint the loop if due. `extra`: other
        loop state the method needs back (`self.resume["extra"]`)."""
        self.checkpoint(lambda: {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "generator": generator.get_state(), "rng": torch.get_rng_state(),
                                 "extra": extra})


def finetune(task, model, x, targets, loss_fn, params, parameters=None, after_step=None):
    """The common inner loop: SGD (momentum, weight decay from params) on (x, targets) for params['epochs'].
    x are stored inputs (task.retain_x/forget_x rows): each batch goes through task.prepare."""
    optimizer = sgd(model, params["lr"], params.get("momentum", 0.9), params.get("weight_decay", 5e-4),
                    parameters=parameters)
    generator = task.generator()
    start_epoch = task.resume_loop(model, optimizer, generator)

    def on_epoch(epoch, metrics):
        task.log_epoch(epoch, metrics, model)
        task.end_epoch(epoch, model, optimizer, generator)
    run_epochs(model, x, targets, loss_fn, optimizer, epochs=params["epochs"], batch_size=params["batch_size"],
               generator=generator, device=task.device, after_step=after_step, start_epoch=start_epoch,
               on_epoch=on_epoch, speed=task.speed, prepare=task.prepare)
    return model


def unlearn(name, task, params):
    """Run method `name` on `task`; returns the unlearned model (the original is left as it was)."""
    method = methods.get(name)
    torch.manual_seed(task.seed)
    return method.run(task, methods.resolve_params(name, params))
