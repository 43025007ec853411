"""What a method's `run(task, params)` gets, the common fine-tuning loop, and `unlearn` (torch).

The registry (names, params and their checks) is trainables/methods/__init__.py, which imports no torch.
"""
import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from trainables import methods
from trainables.train import Speed, run_epochs, sgd


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

    def fresh_copy(self):
        """A trainable deep copy of the original, on the task's device."""
        model = copy.deepcopy(self.original).to(self.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def generator(self):
        return torch.Generator().manual_seed(self.seed)


def finetune(task, model, x, targets, loss_fn, params, parameters=None, after_step=None):
    """The common inner loop: SGD (momentum, weight decay from params) on (x, targets) for params['epochs']."""
    optimizer = sgd(model, params["lr"], params.get("momentum", 0.9), params.get("weight_decay", 5e-4),
                    parameters=parameters)
    run_epochs(model, x, targets, loss_fn, optimizer, epochs=params["epochs"], batch_size=params["batch_size"],
               generator=task.generator(), device=task.device, after_step=after_step, on_epoch=lambda epoch, metrics: task.log_epoch(epoch, metrics, model),
               speed=task.speed)
    return model


def unlearn(name, task, params):
    """Run method `name` on `task`; returns the unlearned model (the original is left as it was)."""
    method = methods.get(name)
    torch.manual_seed(task.seed)
    return method.run(task, methods.resolve_params(name, params))
