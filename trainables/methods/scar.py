"""SCAR (Bonato et al. 2024): push forget embeddings to the closest other class, in Mahalanobis distance,
while distilling the original on out-of-distribution surrogate inputs (no retain set in the loss).

Embeddings are the final layer's inputs (`features_and_logits`), power-transformed z ↦ sign(z)|z|^δ
(δ 0.5; sign-preserving, the reference's torch.pow assumes z >= 0). As in the reference code
(jbonato1/SCAR, Mahalanobis.run): per retained class, mean and covariance of the transformed retain
embeddings of the ORIGINAL; covariance shrunk twice with Σ + γ1·V1·I + γ2·V2·(1−I) (V1 = mean
variance, V2 = mean non-zero covariance; γ1 = γ2 = 3, twice = once with 15), turned into a
correlation matrix, pseudo-inverted; distance d(z, c) = (ẑ − μ̂_c)ᵀ Σ_c⁺ (ẑ − μ̂_c) between the
L2-normalised transformed embedding and class mean. Each forget sample's target is the closest class
other than its own under the original's statistics, fixed once (statistics cover retained classes
only, as in the reference). Loss per step: λ1 · mean d(student embedding of a forget batch, target)
+ λ2 · KL(teacher ‖ student) on a surrogate batch; surrogates the teacher assigns to a forget class
are dropped and the teacher's forget-class logits set to its row minimum (the reference: the batch
minimum). Adam (lr 5e-4, `momentum` = β1 = 0.9, Adam's default; no weight decay as in the reference),
λ1 1, λ2 5, 25 epochs (paper B.2); batch 128 (B.2) rather than the reference's 1024.

Departures: the student keeps BatchNorm in eval mode (the reference trains in train mode on real
surrogate images; synthetic surrogates would shift the running statistics: on digits train mode cost
0.6-2 points of retain accuracy). An epoch is one pass over the surrogate pool, each step paired with
the next forget batch. As in the reference, training stops as soon as the forget-set (train) accuracy
after a step is below `target_accuracy` (0.01; 0 disables).
Surrogates (there is no OOD data set offline): a pool of `num_surrogates` drawn once from the seed.
"noise" (default; uses no retain image, only per-channel statistics, keeping SCAR's no-retain-data
premise): per-pixel Gaussian with the retain inputs' per-channel mean and std, clipped to their
per-channel range. "shuffled": retain images with their pixel positions permuted (same intensity
histogram, more varied teacher predictions, but it reads retain pixels). Surrogates are model inputs:
"shuffled" permutes stored pixels, then normalises (the same values: normalising is per channel,
elementwise); "noise" takes its statistics from the whole retain set as model inputs, normalised once
on the host (the device only ever holds the stored forget set and the surrogate pool).
"""
import torch
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods._mahalanobis import class_statistics, closest_other_class, mahalanobis
from trainables.models import features_and_logits
from trainables.train import predict_logits, speed_autocast, speed_batch, speed_data, speed_model

SURROGATES = ("noise", "shuffled")


def keep_surrogates(teacher_logits, forget_classes):
    """Mask of surrogate inputs the teacher does not assign to a forget class."""
    return ~torch.isin(teacher_logits.argmax(dim=1), torch.as_tensor(forget_classes, device=teacher_logits.device))


def make_surrogates(kind, reference_x, count, generator):
    """`count` surrogate inputs shaped like `reference_x` (N, C, H, W), drawn with `generator`."""
    if kind == "noise":
        dims = [0] + list(range(2, reference_x.dim()))
        mean, std = reference_x.mean(dims, keepdim=True), reference_x.std(dims, keepdim=True)
        low, high = reference_x.amin(dims, keepdim=True), reference_x.amax(dims, keepdim=True)
        noise = torch.randn((count,) + tuple(reference_x.shape[1:]), generator=generator)
        return torch.maximum(torch.minimum(mean + std * noise, high), low)
    if kind == "shuffled":
        images = reference_x[torch.randint(len(reference_x), (count,), generator=generator)]
        flat = images.flatten(2)                          # (count, C, H·W): one permutation for all channels
        order = torch.argsort(torch.rand(count, flat.shape[2], generator=generator), dim=1)
        return torch.gather(flat, 2, order[:, None, :].expand_as(flat)).view_as(images)
    raise ValueError(f"unknown surrogate {kind!r}; choose from {SURROGATES}")


def surrogate_pool(task, params, generator):
    """The surrogate inputs, as model inputs (see the module docstring)."""
    if params["surrogate"] == "shuffled":
        return task.prepare(make_surrogates("shuffled", task.retain_x, params["num_surrogates"], generator))
    return make_surrogates(params["surrogate"], task.prepare(task.retain_x), params["num_surrogates"], generator)


@torch.no_grad()
def targets_from_original(task, params, generator):
    """From the frozen original: class statistics, each forget sample's target class, kept surrogates + targets."""
    device, delta = task.device, params["delta"]
    retained = [c for c in range(task.num_classes) if c not in set(task.forget_classes)]
    task.original.eval()
    embed = lambda x: torch.cat([features_and_logits(task.original, task.prepare(x[i:i + 512].to(device)))[0]
                                 for i in range(0, len(x), 512)])
    means, inverses = class_statistics(embed(task.retain_x), task.retain_y.to(device), retained,
                                       delta, params["gamma1"], params["gamma2"])
    distances = mahalanobis(embed(task.forget_x), means, inverses, delta)
    targets = closest_other_class(distances, task.forget_y, retained).cpu()   # indices into `retained`
    surrogates = surrogate_pool(task, params, generator)
    teacher = predict_logits(task.original, surrogates, device)
    kept = keep_surrogates(teacher, task.forget_classes)
    if not kept.any():
        raise ValueError(f"scar: the original assigns all {len(kept)} {params['surrogate']!r} surrogates "
                         "to a forget class")
    surrogates, teacher = surrogates[kept], teacher[kept]
    teacher[:, torch.as_tensor(task.forget_classes)] = teacher.min(dim=1, keepdim=True).values
    return means, inverses, targets, surrogates, teacher


# version 2: the task's numeric path (bf16/channels_last on GPU; was fp32)
@register("scar", version=2, choices={"surrogate": SURROGATES},
          bounds={"momentum": (0.0, 0.999), "target_accuracy": (0.0, 1.0), "num_surrogates": (1, None)},
          epochs=25, lr=5e-4, batch_size=128, momentum=0.9, weight_decay=0.0, lambda1=1.0, lambda2=5.0,
          delta=0.5, gamma1=3.0, gamma2=3.0, surrogate="noise", num_surrogates=1024, target_accuracy=0.01)
def run(task, params):
    device, delta, batch, generator = task.device, params["delta"], params["batch_size"], task.generator()
    means, inverses, targets, surrogates, teacher = targets_from_original(task, params, generator)
    speed = task.speed                                 # the numeric path every method trains on (train.py)
    forget_x, targets, surrogates, teacher = speed_data(speed, device, task.forget_x, targets, surrogates, teacher)
    student = speed_model(task.fresh_copy().eval(), speed)   # eval: BatchNorm statistics stay the original's
    optimizer = torch.optim.Adam(student.parameters(), lr=params["lr"], betas=(params["momentum"], 0.999),
                                 weight_decay=params["weight_decay"])
    forget_order, cursor, forget_acc, stop = torch.randperm(len(task.forget_x), generator=generator), 0, 1.0, False
    start_epoch = task.resume_loop(student, optimizer, generator)
    if start_epoch:                                    # where the resumed attempt's forget batches continue
        forget_order, cursor = task.resume["extra"]["forget_order"], task.resume["extra"]["cursor"]
    for epoch in range(start_epoch + 1, params["epochs"] + 1):
        totals, steps = torch.zeros(2), 0
        order = torch.randperm(len(surrogates), generator=generator)
        for start in range(0, len(surrogates), batch):
            if cursor >= len(forget_order):
                forget_order, cursor = torch.randperm(len(task.forget_x), generator=generator), 0
            f_index = forget_order[cursor:cursor + batch].to(forget_x.device)
            s_index, cursor = order[start:start + batch].to(forget_x.device), cursor + batch
            # forwards on the task's speed; the losses in float32 (the Mahalanobis form is too fine for bf16)
            with speed_autocast(speed, device):
                forget_batch = task.prepare(forget_x[f_index].to(device))
                embeddings, _ = features_and_logits(student, speed_batch(forget_batch, speed))
                surrogate_logits = student(speed_batch(surrogates[s_index].to(device), speed))
            distances = mahalanobis(embeddings.float(), means, inverses, delta)
            loss_forget = params["lambda1"] * distances.gather(1, targets[f_index].to(device)[:, None]).mean()
            log_student = F.log_softmax(surrogate_logits.float(), dim=1)
            log_teacher = F.log_softmax(teacher[s_index].to(device), dim=1)
            loss_retain = params["lambda2"] * F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
            optimizer.zero_grad(set_to_none=True)
            (loss_forget + loss_retain).backward()
            optimizer.step()
            totals, steps = totals + torch.tensor([loss_forget.item(), loss_retain.item()]), steps + 1
            # the reference's stopping rule, checked after every step: forget (train) accuracy below target
            predictions = predict_logits(student, forget_x, device, prepare=task.prepare).argmax(1)
            forget_acc = (predictions == task.forget_y).float().mean().item()
            if forget_acc < params["target_accuracy"]:
                stop = True
                break
        task.log_epoch(epoch, {"train_loss": float(totals.sum()) / steps, "forget_loss": float(totals[0]) / steps,
                               "retain_loss": float(totals[1]) / steps, "forget_accuracy": forget_acc}, student)
        if stop:
            break
        task.end_epoch(epoch, student, optimizer, generator, extra={"forget_order": forget_order, "cursor": cursor})
    return student
