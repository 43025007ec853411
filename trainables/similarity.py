"""Similarity scores s_k between a forget class f and the retained classes, for TRW's tilt.

A named, swappable component (docs/methods.md, TRW): each entry maps (context, forget_class, forget_classes,
rank, temperature) -> (C,) scores, a softmax over retained classes with 0 at every forget class.
`context` is a `SimilarityContext`: the original model's final-layer weight W (C, d) plus, computed
lazily on first use, the class centroids of the original's penultimate embeddings and its mean
softmax per class on the training data. A bare weight tensor is accepted wherever a context is (it becomes a weight-only context), so
weight-only scores can be called as fn(W, f, F, rank, T). `score_matrix` is the entry point TRW uses.

Entries:
- `weight_pca_cosine` (the paper's default, A.3): cosine of PCA-projected logit-weight rows.
- `centroid_distance` (the paper's Figure 2 toy example): inverse Euclidean distance between class
  centroids of the original model's penultimate embeddings.
- `original_softmax` (ours, data-driven): the original's mean softmax over the retained classes on
  the forget class's training samples — where the original already leans.

`unlearn-grid tables` writes neighbour_agreement.csv|md|tex: for every entry here, whether its top
class is the class Retrain models send the forget class to (MIA-NN's c*).
"""
import torch

from trainables.models import features_and_logits, final_layer

SIMILARITIES = {}


def _as_list(forget_classes):
    return [int(c) for c in torch.atleast_1d(torch.as_tensor(forget_classes)).tolist()]


def register(name):
    def wrap(fn):
        SIMILARITIES[name] = fn
        return fn
    return wrap


class SimilarityContext:
    """What a similarity function may read about the original model; the centroids only on demand.

    weight:    (C, d) final-layer weight of the original (or None when only centroids are given).
    centroids: (C, e) class centroids given directly (e.g. a hand-made case or input-space centroids);
               otherwise computed on first access from `model` on (x, y) as the per-class mean of the
               penultimate embeddings (`features_and_logits`) in eval mode, batched on `device`.
               A class without samples gets a NaN row.
    probabilities: (C, C) whose row c is the original's mean softmax on the training samples of class
               c, given directly; otherwise row c is computed on first use (`mean_probabilities(c)`)
               from `model` on the samples of (x, y) labelled c (the full pass that computes the
               centroids fills every row at once). A class without samples gets a NaN row.
    x, y:      a tensor each, or tuples of parts (retain, forget) that are read in turn.
    prepare:   applied to each batch of x before the model (e.g. data.model_input for uint8 images),
               so a caller need not normalise a whole training set at once; None: x as it is.
    """

    def __init__(self, weight=None, centroids=None, model=None, x=None, y=None, num_classes=None,
                 device=torch.device("cpu"), batch_size=1024, probabilities=None, prepare=None):
        if weight is None and centroids is None and probabilities is None and (model is None or x is None or y is None):
            raise ValueError("a SimilarityContext needs a weight, centroids, probabilities, or a model with data (x, y)")
        self.weight = None if weight is None else weight.detach().cpu()
        self._centroids = None if centroids is None else torch.as_tensor(centroids).detach().cpu().double()
        self._probabilities = {}
        if probabilities is not None:
            given = torch.as_tensor(probabilities).detach().cpu().double()
            self._probabilities = {c: given[c] for c in range(given.shape[0])}
        self.model, self.x, self.y, self.prepare = model, x, y, prepare
        self.device, self.batch_size = device, batch_size
        if num_classes is None:
            num_classes = (self.weight.shape[0] if self.weight is not None else
                           self._centroids.shape[0] if self._centroids is not None else
                           len(self._probabilities) if self._probabilities else
                           final_layer(model).out_features)
        self.num_classes = int(num_classes)

    @classmethod
    def from_task(cls, task):
        """The context of an UnlearnTask: the original's final-layer weight; centroids and mean softmax
        over retain ∪ forget."""
        return cls(weight=final_layer(task.original).weight, model=task.original,
                   x=(task.retain_x, task.forget_x), y=(task.retain_y, task.forget_y),
                   num_classes=task.num_classes, device=task.device, prepare=task.prepare)

    @property
    def centroids(self):
        if self._centroids is None:
            if self.model is None or self.x is None or self.y is None:
                raise ValueError("this similarity needs class centroids: give the context a model and data")
            centroids = self._embedding_centroids()
            if centroids is None:
                raise ValueError("this similarity needs class centroids: the context's data has no samples")
            self._centroids = centroids
        return self._centroids

    def mean_probabilities(self, cls):
        """(C,) the original's mean softmax over the training samples of class `cls` (NaN without any)."""
        cls = int(cls)
        if cls not in self._probabilities:
            if self.model is None or self.x is None or self.y is None:
                raise ValueError("this similarity needs the original's softmax on the training data: "
                                 "give the context a model and data, or probabilities")
            self._embedding_centroids(only_class=cls)
        return self._probabilities[cls]

    def _batches(self, only_class=None):
        """(model input, labels) batches of (x, y); only the samples of `only_class` when given."""
        parts_x = self.x if isinstance(self.x, (tuple, list)) else (self.x,)
        parts_y = self.y if isinstance(self.y, (tuple, list)) else (self.y,)
        for x, y in zip(parts_x, parts_y):
            if only_class is not None:
                chosen = torch.as_tensor(y).long().cpu() == only_class
                if not chosen.any():
                    continue
                x, y = x[chosen.to(x.device)], y[chosen.to(y.device)]
            for start in range(0, len(x), self.batch_size):
                batch = x[start:start + self.batch_size].to(self.device)
                yield (batch if self.prepare is None else self.prepare(batch)), y[start:start + self.batch_size].long().cpu()

    @torch.no_grad()
    def _embedding_centroids(self, only_class=None):
        """One eval-mode pass of the model over (x, y) (only the samples of `only_class` when given):
        per class the mean penultimate embedding (returned) and the mean softmax (kept for
        mean_probabilities, so a full pass serves both)."""
        was_training = self.model.training
        self.model.eval()
        sums, counts = None, torch.zeros(self.num_classes, dtype=torch.float64)
        probabilities = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
        try:
            for x, labels in self._batches(only_class):
                z, logits = features_and_logits(self.model, x)
                z = z.flatten(1).double().cpu()
                if sums is None:
                    sums = torch.zeros(self.num_classes, z.shape[1], dtype=torch.float64)
                sums.index_add_(0, labels, z)
                probabilities.index_add_(0, labels, torch.softmax(logits.double(), dim=1).cpu())
                counts += torch.bincount(labels, minlength=self.num_classes).double()
        finally:
            self.model.train(was_training)
        means = probabilities / counts[:, None]    # 0/0 -> NaN rows for classes without samples
        for cls in range(self.num_classes) if only_class is None else (int(only_class),):
            self._probabilities.setdefault(cls, means[cls])
        if sums is None:
            return None
        return sums / counts[:, None]       # 0/0 -> NaN rows for classes without samples


def as_context(context):
    """A SimilarityContext from a context or a bare (C, d) weight tensor."""
    return context if isinstance(context, SimilarityContext) else SimilarityContext(weight=context)


def masked_softmax(values, forget_classes, temperature):
    """softmax(values / T) over the classes that are not forget classes; 0 on forget classes."""
    logits = values / temperature
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[_as_list(forget_classes)] = True
    return torch.softmax(logits.masked_fill(mask, float("-inf")), dim=0)


@register("weight_pca_cosine")
def weight_pca_cosine(context, forget_class, forget_classes, rank=None, temperature=0.1):
    """Paper A.3: PCA of the C×d logit-weight rows (centred, top `rank` directions, default C-1),
    cosine of projected w_f with every projected w_k, softmax at temperature T over k ∉ F."""
    rows = as_context(context).weight.detach().double()
    centred = rows - rows.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    rank = min(rows.shape[0] - 1 if rank is None else rank, right.shape[0])
    projected = centred @ right[:rank].T
    cosine = torch.nn.functional.cosine_similarity(projected, projected[forget_class][None, :], dim=1)
    return masked_softmax(cosine, forget_classes, temperature).float()


@register("centroid_distance")
def centroid_distance(context, forget_class, forget_classes, rank=None, temperature=0.1):
    """Figure 2's toy tilt: inverse Euclidean distance between class centroids, softmax at T over k ∉ F.

    Centroids are those of the ORIGINAL model's penultimate embeddings on the training data (retain ∪
    forget), so the same score works for images. (The paper does not say which space its toy used; on
    toy2d input-space centroids rank the classes the same way — pass them as
    SimilarityContext(centroids=...) to use them.) OUR choice: the inverse distances are normalised by the nearest
    retained one, s_k = softmax_k((d_min / d_k) / T) with d_k = ‖μ_f − μ_k‖, so the nearest class gets
    1/T before the softmax whatever the embedding scale; a plain 1/d_k would make T (and so the tilt)
    depend on the scale of the embeddings. `rank` is unused. A retained class without samples (NaN
    centroid) gets similarity 0 before the softmax.
    """
    centroids = as_context(context).centroids.double()
    distance = torch.linalg.vector_norm(centroids - centroids[forget_class][None, :], dim=1)
    if not torch.isfinite(distance[forget_class]):
        raise ValueError(f"centroid_distance: no samples of forget class {forget_class} to place its centroid")
    retained = torch.ones(len(distance), dtype=torch.bool)
    retained[_as_list(forget_classes)] = False
    finite = retained & torch.isfinite(distance)
    if not finite.any():
        raise ValueError("centroid_distance: no retained class has samples")
    nearest = distance[finite].min().clamp_min(1e-12)
    inverse = torch.where(finite, nearest / distance.clamp_min(1e-12), torch.zeros_like(distance))
    return masked_softmax(inverse, forget_classes, temperature).float()


@register("original_softmax")
def original_softmax(context, forget_class, forget_classes, rank=None, temperature=0.1):
    """Data-driven (ours, not the paper's): where the ORIGINAL already sends the forget class.

    p̄ = the original's mean softmax over the training samples of `forget_class` (eval mode), restricted
    to the retained classes. As centroid_distance, normalised by its largest retained value,
    s_k = softmax_k((p̄_k / max_{j∉F} p̄_j) / T) over k ∉ F, so the class the original leans to most gets
    1/T before the softmax whatever the original's confidence (the same as renormalising p̄ over the
    retained classes first). `rank` is unused.
    """
    mean = as_context(context).mean_probabilities(forget_class).double()
    if not torch.isfinite(mean).all():
        raise ValueError(f"original_softmax: no training samples of forget class {forget_class}")
    retained = torch.ones(len(mean), dtype=torch.bool)
    retained[_as_list(forget_classes)] = False
    if not retained.any():
        raise ValueError("original_softmax: no retained class")
    normalised = mean / mean[retained].max().clamp_min(1e-300)
    return masked_softmax(normalised, forget_classes, temperature).float()


def score_matrix(name, context, forget_classes, rank=None, temperature=0.1):
    """(C, C) tensor whose row f holds the scores for forget class f (other rows are zero).

    context: a SimilarityContext (SimilarityContext.from_task(task) in TRW) or a bare (C, d) weight.
    """
    context = as_context(context)
    num_classes = context.num_classes
    scores = torch.zeros(num_classes, num_classes)
    for forget_class in _as_list(forget_classes):
        scores[forget_class] = SIMILARITIES[name](context, forget_class, forget_classes, rank, temperature)
    return scores
