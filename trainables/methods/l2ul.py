"""L2UL (Cha et al., AAAI 2024, "Learning to unlearn"): forget with adversarial anchors and weight importance.

1. Adversarial examples: targeted L2-PGD on the frozen original from each forget sample toward a random
   retained class (never a forget class), radius ε = 4.0, step 0.1, 100 steps (the reference code's
   `pgd_iter`), random start in the ball (advertorch's `rand_init`); targets and starts come from the
   unlearning seed. `num_adv` examples per forget sample: the reference uses 20 for 16 instance-wise
   samples; class-level forget sets are large, so 1 by default. Note ε is in pixel units: 4.0 is small
   for 3×32×32 images but can turn an 8×8 digit into another digit. On datasets whose model inputs
   are normalised (MNIST, CIFAR, Tiny-ImageNet) the attack runs in pixel space (_pixels.py). The forget
   set (one class: small) is turned into model inputs once (task.prepare), and everything below trains
   on model inputs: forget and adversarial samples share one tensor.
2. MAS importance on the forget set: |∂ mean ‖f(x)‖² / ∂θ| per batch, averaged over batches (as the
   reference code; the MAS paper's squared norm, the reference uses ‖f(x)‖), taken in eval mode so
   BatchNorm statistics are not touched; min-max normalised per tensor and inverted (1 − imp), so the
   weights that matter most to the forget set are penalised least.
3. Loss: −CE(forget) + CE(adv, targets) + λ Σ imp (θ − θ0)²/2 with SGD lr 1e-3, momentum 0.9,
   weight decay 1e-4 and λ = 1 (the reference's run script). Forget and adversarial samples are
   shuffled together (one forward pass, where the reference makes one per kind) and each CE term is
   weighted by its share of the batch, as the reference does.
   Training stops when the forget training accuracy is 0 (checked after every epoch; the reference
   checks after every step), bounded by `epochs` (20, paper B.2).
"""
import torch
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods._pixels import on_pixels, pixel_stats, to_inputs, to_pixels
from trainables.methods.rl import random_other_labels
from trainables.train import predict_logits, run_epochs, sgd, speed_data


def _project_l2(delta, epsilon):
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (epsilon / norms).clamp(max=1.0).view(-1, *[1] * (delta.dim() - 1))


def targeted_l2_pgd(model, x, targets, epsilon, step, steps, generator, stats=None):
    """Adversarial inputs within ‖δ‖₂ ≤ ε of x and in [0, 1], pushed toward `targets` (model untouched).

    With `stats` (mean, std; _pixels.pixel_stats) x are normalised pixels: the ball, the step and the
    box are in pixel space (the attack runs there on model ∘ normalise) and model inputs come back."""
    model.eval()
    model, x = on_pixels(model, stats), to_pixels(x, stats)
    noise = torch.rand(x.shape, generator=generator).to(x)                 # a random point of the box,
    delta = _project_l2(noise - x, epsilon)                                 # projected into the ball
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x + delta), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = (x + delta.detach() - step * grad).clamp(0.0, 1.0) - x    # descend: toward the target
        delta = _project_l2(delta, epsilon)        # shrinking toward x keeps x + delta inside [0, 1]
    return to_inputs(x + delta, stats).detach()


def mas_importance(model, x, device, batch_size):
    """Per parameter: batch-size-weighted mean over batches of |∂ mean ‖f(x)‖² / ∂θ| (eval mode)."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        grads = torch.autograd.grad(model(xb).pow(2).sum(dim=1).mean(), params, allow_unused=True)
        for acc, grad in zip(total, grads):
            if grad is not None:
                acc += grad.abs() * len(xb)
    return [acc / len(x) for acc in total]


def penalty_weights(importance):
    """1 − min-max normalised importance, per tensor: in [0, 1], 0 where the forget set relies most."""
    weights = []
    for imp in importance:
        spread = imp.max() - imp.min()
        weights.append(1 - (imp - imp.min()) / spread if spread > 0 else torch.ones_like(imp))
    return weights


def adversarial_set(task, params, generator, chunk=512, forget_inputs=None):
    """(inputs, targets): `num_adv` targeted PGD examples per forget sample toward random retained classes.
    forget_inputs: the forget set as model inputs (default: task.prepare(task.forget_x))."""
    forget_inputs = task.prepare(task.forget_x) if forget_inputs is None else forget_inputs
    inputs, targets, stats = [], [], pixel_stats(task)
    for _ in range(params["num_adv"]):
        wanted = random_other_labels(task.forget_y, task.forget_classes, task.num_classes, generator)
        for start in range(0, len(wanted), chunk):
            xb = forget_inputs[start:start + chunk].to(task.device)
            inputs.append(targeted_l2_pgd(task.original, xb, wanted[start:start + chunk].to(task.device),
                                          params["epsilon"], params["pgd_step"], params["pgd_steps"], generator,
                                          stats).cpu())
        targets.append(wanted)
    if not inputs:                                   # num_adv = 0: plain −CE on the forget set
        return forget_inputs[:0], task.forget_y[:0]
    return torch.cat(inputs), torch.cat(targets)


# version 2: PGD in pixel space; the task's numeric path (bf16/channels_last on GPU)
@register("l2ul", version=2, epochs=20, lr=1e-3, batch_size=128, momentum=0.9, weight_decay=1e-4,
          epsilon=4.0, pgd_step=0.1, pgd_steps=100, num_adv=1, lam_reg=1.0)
def run(task, params):
    generator, device = task.generator(), task.device
    forget_x = task.prepare(task.forget_x)                   # model inputs, once (see the docstring)
    adv_x, adv_y = adversarial_set(task, params, generator, forget_inputs=forget_x)
    x = torch.cat([forget_x, adv_x])
    # targets (label, sign): sign −1 on forget samples (ascent), +1 on adversarial ones; the batch mean of
    # sign · CE weights each term by its share of the batch, as the reference code does
    signs = torch.cat([-torch.ones_like(task.forget_y), torch.ones_like(adv_y)])
    targets = torch.stack([torch.cat([task.forget_y, adv_y]), signs], dim=1)
    x, targets = speed_data(task.speed, device, x, targets)   # once, not again at every epoch's run_epochs

    model = task.fresh_copy()
    params_list = [p for p in model.parameters() if p.requires_grad]
    weights = penalty_weights(mas_importance(model, forget_x, device, params["batch_size"]))
    anchors = [p.detach().clone() for p in params_list]

    def loss_fn(logits, target):
        ce = (target[:, 1] * F.cross_entropy(logits, target[:, 0], reduction="none")).mean()
        reg = sum((w * (p - p0).pow(2)).sum() for w, p, p0 in zip(weights, params_list, anchors)) / 2
        return ce + params["lam_reg"] * reg

    optimizer = sgd(model, params["lr"], params["momentum"], params["weight_decay"])
    forget_acc = []

    def on_epoch(epoch, metrics):
        predictions = predict_logits(model, forget_x, device).argmax(dim=1)
        forget_acc.append(100.0 * (predictions == task.forget_y).float().mean().item())
        task.log_epoch(epoch, {**metrics, "forget_acc": forget_acc[-1]}, model)

    for epoch in range(task.resume_loop(model, optimizer, generator), params["epochs"]):
        run_epochs(model, x, targets, loss_fn, optimizer, epochs=epoch + 1,
                   start_epoch=epoch, batch_size=params["batch_size"], generator=generator, device=device,
                   on_epoch=on_epoch, speed=task.speed)
        if forget_acc[-1] == 0.0:
            break
        task.end_epoch(epoch + 1, model, optimizer, generator)   # after the stop check: a checkpoint continues
    return model
