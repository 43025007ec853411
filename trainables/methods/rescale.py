"""Rescale: TRW with λ = 0, i.e. the forget mass is redistributed proportionally (paper eq. 1).

Kept as its own method so grids and tables name it; the tilt-free ablation point of TRW. It keeps TRW's
pooled loss weighting and has no `forget_weighting` param (so its trial keys did not change when TRW
gained one); TRW with lam 0 and forget_weighting sum_of_means is the other reading's rescale.
"""
from trainables.methods import METHODS, register
from trainables.methods.trw import run as trw_run

_NOT_RESCALES = ("lam", "similarity", "rank", "temperature", "forget_weighting")
_TRW_DEFAULTS = {k: v for k, v in METHODS["trw"].defaults.items() if k not in _NOT_RESCALES}


@register("rescale", **_TRW_DEFAULTS)
def run(task, params):
    # scores are irrelevant at λ = 0; the default similarity fills the slot
    return trw_run(task, {**params, "lam": 0.0, "similarity": "weight_pca_cosine", "rank": None, "temperature": 0.1,
                           "forget_weighting": "pooled"})
