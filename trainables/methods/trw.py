"""TRW — Tilted ReWeighting (the paper's method, eqs. 1–4; docs/metrics.md writes the target out).

For a forget-class input with original softmax p: rescale p to the retained classes (p̂), tilt it
by exp(λ s_k) with per-forget-class similarity scores s, and fine-tune with CE on retain samples
plus soft CE toward q on forget samples. Targets are computed once from the frozen original.
Paper budget: 10 epochs at lr 1e-3, λ = 10, T = 0.1. `similarity` names an entry of
trainables.similarity (weight_pca_cosine, the paper's default; centroid_distance, Figure 2's toy tilt).

Loss weighting (`forget_weighting`, docs/methods.md): retain and forget samples are pooled into one
shuffled set and every minibatch loss is the mean over its samples, so the N_r retain and N_f forget
samples each weigh alike and the forget term weighs by its share N_f / N (N = N_r + N_f):
    pooled (default)   E[batch loss] = (N_r/N) mean_retain CE + (N_f/N) mean_forget soft CE.
The paper's Eq. 4 writes the loss as CE on retain + soft CE on forget without saying how minibatches
mix them; read as a sum of two MEAN losses it is
    sum_of_means       E[batch loss] = mean_retain CE + mean_forget soft CE,
which we get with the same pooled minibatches by scaling target rows (soft CE is linear in its target,
so a row scaled by w contributes w times its loss): retain rows by N/N_r, forget rows by N/N_f. A batch
drawn uniformly has E[(1/B) sum w_i L_i] = (1/N) sum_i w_i L_i = mean_retain + mean_forget, and so has
the epoch's mean loss. Default pooled: it is what this code has always computed (stored results keep
their meaning); we have no reference implementation of TRW to check either reading against.
"""
import torch

from trainables.methods import register
from trainables.methods.task import finetune
from trainables.similarity import SIMILARITIES, SimilarityContext, score_matrix
from trainables.train import predict_logits, soft_cross_entropy

WEIGHTINGS = ("pooled", "sum_of_means")     # forget_weighting; module docstring


def tilted_log_target(log_probs, forget_classes, scores, lam):
    """log q from log p: q_k ∝ p_k exp(λ s_k) for k ∉ F, q_F = 0 (the rescale is implied by normalising)."""
    forget = torch.tensor(sorted({int(c) for c in torch.atleast_1d(torch.as_tensor(forget_classes)).tolist()}))
    tilted = log_probs + float(lam) * scores.to(log_probs.dtype)
    tilted[..., forget] = float("-inf")
    return torch.log_softmax(tilted, dim=-1)


def tilted_target(probs, forget_classes, scores, lam):
    """TRW target q (N, C) from original-model probabilities `probs` (N, C).

    forget_classes: int or list of ints; scores: (C,) (or (N, C), one row per sample), entries of
    forget classes ignored; lam >= 0. λ = 0 is plain rescaling p_k / (1 - p_f). Zero
    probabilities are clamped to the smallest positive float so a row never becomes all-zero.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    log_probs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return tilted_log_target(log_probs, forget_classes, scores, lam).exp()


def training_targets(task, params):
    """(stored inputs, soft targets) for retain ∪ forget: one-hot labels on retain, tilted q on forget."""
    # the context hands the similarity the original's final-layer weight and, only if it asks for them,
    # class centroids of the original's embeddings on retain ∪ forget (centroid_distance)
    scores = score_matrix(params["similarity"], SimilarityContext.from_task(task), task.forget_classes,
                          params["rank"], params["temperature"])
    log_probs = torch.log_softmax(predict_logits(task.original, task.forget_x, task.device,
                                                 prepare=task.prepare).double(), dim=1)
    q = tilted_log_target(log_probs, task.forget_classes, scores[task.forget_y].double(), params["lam"]).exp()
    retain = torch.nn.functional.one_hot(task.retain_y, task.num_classes).float()
    retain, q = weighted_targets(retain, q.float(), params["forget_weighting"])
    return torch.cat([task.retain_x, task.forget_x]), torch.cat([retain, q])


def weighted_targets(retain, forget, weighting):
    """(retain, forget) target rows scaled for `weighting` (module docstring): unchanged for 'pooled';
    for 'sum_of_means' retain rows times N/N_r and forget rows times N/N_f, so the pooled mean loss
    is in expectation mean_retain + mean_forget."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"forget_weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "pooled":
        return retain, forget
    total = len(retain) + len(forget)
    return retain * (total / max(len(retain), 1)), forget * (total / max(len(forget), 1))


@register("trw", choices={"similarity": tuple(SIMILARITIES), "forget_weighting": WEIGHTINGS}, epochs=10, lr=1e-3,
          batch_size=128, momentum=0.9, weight_decay=5e-4, lam=10.0, temperature=0.1, rank=None,
          similarity="weight_pca_cosine", forget_weighting="pooled")
def run(task, params):
    model = task.fresh_copy()
    x, targets = training_targets(task, params)
    return finetune(task, model, x, targets, soft_cross_entropy, params)
