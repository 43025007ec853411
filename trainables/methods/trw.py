"""TRW — Tilted ReWeighting (the paper's method, eqs. 1–4; docs/metrics.md writes the target out).

For a forget-class input with original softmax p: rescale p to the retained classes (p̂), tilt it
by exp(λ s_k) with per-forget-class similarity scores s, and fine-tune with CE on retain samples
plus soft CE toward q on forget samples. Targets are computed once from the frozen original.
Paper budget: 10 epochs at lr 1e-3, λ = 10, T = 0.1. `similarity` names an entry of
trainables.similarity (weight_pca_cosine, the paper's default; centroid_distance, Figure 2's toy tilt).
"""
import torch

from trainables.methods import register
from trainables.methods.task import finetune
from trainables.similarity import SIMILARITIES, SimilarityContext, score_matrix
from trainables.train import predict_logits, soft_cross_entropy


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
    return torch.cat([task.retain_x, task.forget_x]), torch.cat([retain, q.float()])


@register("trw", choices={"similarity": tuple(SIMILARITIES)}, epochs=10, lr=1e-3, batch_size=128,
          momentum=0.9, weight_decay=5e-4, lam=10.0, temperature=0.1, rank=None, similarity="weight_pca_cosine")
def run(task, params):
    model = task.fresh_copy()
    x, targets = training_targets(task, params)
    return finetune(task, model, x, targets, soft_cross_entropy, params)
