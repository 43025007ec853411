"""Similarity scores s_k between a forget class f and the retained classes, for TRW's tilt.

A named, swappable component (REFERENCE.md): each entry maps (final-layer weight W (C, d),
forget_class, forget_classes, rank, temperature) -> (C,) scores, a softmax over retained classes
with 0 at every forget class. The paper's default is `weight_pca_cosine`.
"""
import torch

SIMILARITIES = {}


def _as_list(forget_classes):
    return [int(c) for c in torch.atleast_1d(torch.as_tensor(forget_classes)).tolist()]


def register(name):
    def wrap(fn):
        SIMILARITIES[name] = fn
        return fn
    return wrap


def masked_softmax(values, forget_classes, temperature):
    """softmax(values / T) over the classes that are not forget classes; 0 on forget classes."""
    logits = values / temperature
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[_as_list(forget_classes)] = True
    return torch.softmax(logits.masked_fill(mask, float("-inf")), dim=0)


@register("weight_pca_cosine")
def weight_pca_cosine(weight, forget_class, forget_classes, rank=None, temperature=0.1):
    """Paper A.3: PCA of the C×d logit-weight rows (centred, top `rank` directions, default C-1),
    cosine of projected w_f with every projected w_k, softmax at temperature T over k ∉ F."""
    rows = weight.detach().double()
    centred = rows - rows.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    rank = min(rows.shape[0] - 1 if rank is None else rank, right.shape[0])
    projected = centred @ right[:rank].T
    cosine = torch.nn.functional.cosine_similarity(projected, projected[forget_class][None, :], dim=1)
    return masked_softmax(cosine, forget_classes, temperature).float()


def score_matrix(name, weight, forget_classes, rank=None, temperature=0.1):
    """(C, C) tensor whose row f holds the scores for forget class f (other rows are zero)."""
    num_classes = weight.shape[0]
    scores = torch.zeros(num_classes, num_classes)
    for forget_class in _as_list(forget_classes):
        scores[forget_class] = SIMILARITIES[name](weight, forget_class, forget_classes, rank, temperature)
    return scores
