"""SCRUB (Kurmanji et al.): a student (copy of the original) moves away from the frozen teacher on forget
data and stays close to it on retain data.

Epoch e (from 1): if e <= msteps, a max pass over the forget set (each batch one step minimising
−KL, i.e. maximising the divergence from the teacher); then, every epoch, a min pass over the retain
set with γ·CE + α·KL. KL is repdistiller's DistillKL, as in the reference code: KL(teacher ‖ student)
of the temperature-T softmaxes, batch mean, × T². That is also the SCRUB paper's d(x) =
D_KL(p(f(x; w_o)) ‖ p(f(x; w_u))); the usual shorthand "KL(student‖teacher)" is read as naming the pair,
not the order (the literal order forgets far less on digits: 66-89% forget accuracy left, not 31-83%).
Teacher = task.original in eval mode; its logits are computed once (it is frozen, so they equal
per-batch ones). The student trains in train mode, as in the reference.

Reference settings (SCRUB's and Kodge et al.'s configs): SGD momentum 0.9, weight decay 5e-4,
lr 5e-4, retain batch 128, forget batch 32, one optimizer for both passes, lr × 0.1 after epochs 3,
5 and 9; γ 0.99, α 0.001, T 4, msteps 2; 10 epochs (paper B.2). The reference's SWA copy is
updated only from epoch 10 and never returned, so it is left out.
"""
import torch
import torch.nn.functional as F

from trainables.methods import register
from trainables.train import predict_logits, run_epochs, sgd, speed_data

LR_DECAY_EPOCHS = (3, 5, 9)   # the reference schedule: lr × lr_decay after each of these epochs


def distill_kl(student_logits, teacher_logits, temperature):
    """KL(p_teacher ‖ p_student) at temperature T, × T², averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def has_max_pass(epoch, msteps):
    """Epochs (from 1) with a max pass over the forget set: the first msteps."""
    return epoch <= msteps


def epoch_lr(epoch, lr, decay):
    return lr * decay ** sum(epoch > milestone for milestone in LR_DECAY_EPOCHS)


# version 2: the task's numeric path (bf16/channels_last on GPU; was fp32)
@register("scrub", version=2, bounds={"forget_batch_size": (1, None), "lr_decay": (0.0, 1.0)},
          epochs=10, lr=5e-4, batch_size=128, forget_batch_size=32, momentum=0.9, weight_decay=5e-4,
          gamma=0.99, alpha=0.001, temperature=4.0, msteps=2, lr_decay=0.1)
def run(task, params):
    student = task.fresh_copy()
    classes, temperature = task.num_classes, params["temperature"]
    teacher_forget = predict_logits(task.original, task.forget_x, task.device, prepare=task.prepare)
    # retain targets: teacher logits with the label appended as a last column (one tensor for run_epochs)
    retain_targets = torch.cat([predict_logits(task.original, task.retain_x, task.device, prepare=task.prepare),
                                task.retain_y[:, None].float()], dim=1)
    # moved to the device once on the fast path (run_epochs would copy them again every pass)
    forget_x, teacher_forget, retain_x, retain_targets = speed_data(task.speed, task.device, task.forget_x, teacher_forget,
                                                                    task.retain_x, retain_targets)
    steps = {"max": 0}

    def max_loss(logits, teacher_logits):
        steps["max"] += 1
        return -distill_kl(logits, teacher_logits, temperature)

    def min_loss(logits, targets):
        return (params["gamma"] * F.cross_entropy(logits, targets[:, classes].long())
                + params["alpha"] * distill_kl(logits, targets[:, :classes], temperature))

    optimizer = sgd(student, params["lr"], params["momentum"], params["weight_decay"])
    generator = task.generator()
    common = dict(epochs=1, generator=generator, device=task.device, speed=task.speed, prepare=task.prepare)
    for epoch in range(task.resume_loop(student, optimizer, generator) + 1, params["epochs"] + 1):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(epoch, params["lr"], params["lr_decay"])
        metrics = {"lr": optimizer.param_groups[0]["lr"]}
        steps["max"] = 0
        if has_max_pass(epoch, params["msteps"]):
            run_epochs(student, forget_x, teacher_forget, max_loss, optimizer,
                       batch_size=params["forget_batch_size"],
                       on_epoch=lambda _, m: metrics.update(max_loss=m["train_loss"]), **common)
        run_epochs(student, retain_x, retain_targets, min_loss, optimizer, batch_size=params["batch_size"],
                   on_epoch=lambda _, m: metrics.update(train_loss=m["train_loss"]), **common)
        task.log_epoch(epoch, {**metrics, "max_steps": float(steps["max"])}, student)
        task.end_epoch(epoch, student, optimizer, generator)
    return student
