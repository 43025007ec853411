"""SCAR's class statistics and distances (scar.py's docstring says what they are and where they come from).

Kept apart from scar.py only to keep that file short; nothing here is SCAR-specific beyond the recipe.
"""
import torch
import torch.nn.functional as F


def power_transform(z, delta):
    return z.sign() * z.abs().clamp_min(1e-12).pow(delta)     # clamp: finite gradient at 0


def shrink(cov, gamma1, gamma2):
    """Σ + γ1·V1·I + γ2·V2·(1−I); V1 = mean diagonal, V2 = mean of the non-zero off-diagonal entries."""
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    off = cov * (1 - eye)
    v2 = off.sum() / (off != 0).sum().clamp_min(1)
    return cov + gamma1 * cov.diagonal().mean() * eye + gamma2 * v2 * (1 - eye)


def class_statistics(embeddings, labels, classes, delta, gamma1, gamma2):
    """(L2-normalised means (K, d), pseudo-inverse shrunk correlation matrices (K, d, d)) per class."""
    means, inverses = [], []
    for c in classes:
        z = power_transform(embeddings[labels == c].double(), delta)
        cov = shrink(shrink(torch.cov(z.T), gamma1, gamma2), gamma1, gamma2)
        std = cov.diagonal().sqrt()
        means.append(F.normalize(z.mean(0), dim=0))
        inverses.append(torch.linalg.pinv(cov / (std[:, None] * std[None, :])))
    return torch.stack(means).float(), torch.stack(inverses).float()


def mahalanobis(embeddings, means, inverses, delta):
    """(N, K) distances of the transformed, L2-normalised embeddings to each class."""
    diff = F.normalize(power_transform(embeddings, delta), dim=1)[:, None, :] - means[None]
    return torch.einsum("nkd,kde,nke->nk", diff, inverses, diff)


def closest_other_class(distances, labels, classes):
    """Per row, the index (into `classes`) of the closest class that is not the sample's own label."""
    own = torch.as_tensor(classes, device=distances.device)[None, :] == labels[:, None].to(distances.device)
    return distances.masked_fill(own, float("inf")).argmin(dim=1)
