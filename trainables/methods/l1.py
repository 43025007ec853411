"""l1-sparse (Jia et al., "Model sparsity can simplify machine unlearning"): fine-tune on the retain
set with CE + α_t ‖θ‖₁, where ‖θ‖₁ sums |θ| over every parameter (weights, biases, BatchNorm affine,
as the reference code's `l1_regularization`).

Schedule: α_t = α · (1 − t/T) with t the 1-based epoch number and T = epochs, computed
from α afresh each epoch (never compounded). Epoch 1 uses α(1 − 1/T), epoch T uses exactly 0, so the
last epoch is plain fine-tuning. Departure: the reference code counts t from 0 (α on the first epoch,
α/T on the last, 0 only in its optional `no_l1_epochs` tail); we shift by one so the decay reaches 0
by the final epoch, without compounding the decay. With T = 1 the single epoch is the last one: α_1 = 0.
Defaults: α = 5e-4, lr 0.01 (the reference scripts' `--unlearn_lr 0.01`), 20 epochs
(paper B.2). Each epoch's α_t is logged as `l1_alpha`.
"""
import torch.nn.functional as F

from trainables.methods import register
from trainables.train import run_epochs, sgd


def l1_coefficient(alpha, epoch, epochs):
    """α_t for 1-based `epoch` of `epochs`: α (1 − epoch/epochs), linear, 0 at the last epoch."""
    if not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in 1..{epochs}, got {epoch}")
    return alpha * (1.0 - epoch / epochs)


def l1_norm(model):
    return sum(p.abs().sum() for p in model.parameters())


# version 2: the task's numeric path (bf16/channels_last on GPU; was fp32)
@register("l1", version=2, epochs=20, lr=0.01, batch_size=128, momentum=0.9, weight_decay=5e-4, alpha=5e-4)
def run(task, params):
    model = task.fresh_copy()
    epochs = params["epochs"]
    current = {"alpha": l1_coefficient(params["alpha"], 1, epochs) if epochs else 0.0}

    def loss_fn(logits, labels):
        loss = F.cross_entropy(logits, labels)
        if current["alpha"] > 0:          # skip the norm's cost where the penalty is off (last epoch)
            loss = loss + current["alpha"] * l1_norm(model)
        return loss

    optimizer, generator = sgd(model, params["lr"], params["momentum"], params["weight_decay"]), task.generator()

    def on_epoch(epoch, metrics):         # after epoch `epoch` (1-based): log it, set the next one's α_t
        task.log_epoch(epoch, {**metrics, "l1_alpha": current["alpha"]}, model)
        if epoch < epochs:
            current["alpha"] = l1_coefficient(params["alpha"], epoch + 1, epochs)
        task.end_epoch(epoch, model, optimizer, generator)

    start_epoch = task.resume_loop(model, optimizer, generator)
    if start_epoch:                       # a resumed attempt: the α_t of the epoch it starts with
        current["alpha"] = l1_coefficient(params["alpha"], start_epoch + 1, epochs)
    run_epochs(model, task.retain_x, task.retain_y, loss_fn, optimizer, epochs=epochs,
               batch_size=params["batch_size"], generator=generator, device=task.device,
               start_epoch=start_epoch, on_epoch=on_epoch, speed=task.speed, prepare=task.prepare)
    return model
