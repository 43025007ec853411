"""Packs: several short trials run one after another inside one Ray Tune trial.

Tune costs about 0.4 s of a core per trial it schedules (actor reset, result and trial folders,
experiment snapshots), and its driver keeps every trial object of a stage: for a grid of seconds-long
trials that is most of the grid's time (bench/scale.py). A pack keeps one MLflow run, one key and
one stored result per trial — only Tune sees fewer, longer trials. Long trials (most work on a GPU)
gain nothing and would only balance worse across workers: they stay one per Tune trial.
"""
from grid.plan import cost, shapes

# A trial below this much work (training images, grid/plan/cost.py: forward + backward passes, evaluation
# included) runs in seconds on any device, so Tune's per-trial cost is a large share of it.
SHORT_TRIAL_IMAGES = 200_000
MAX_PACK = 16            # trials per pack at most: a retried pack reruns at most the trial that was running
# Guided self-scheduling: each pack takes 1/(PACK_SHARE × slots) of the short trials still unpacked, so
# packs shrink to single trials at the end and the last ones to finish leave few slots idle, however
# unequal the trials are (a demo pack of 16 trials of 2–10 s each would otherwise run alone at the end).
PACK_SHARE = 2


def slots(resources, *clusters):
    """How many trials of `resources` ({cpu, gpu}) run at once on the largest of `clusters`
    (shapes.Cluster: the cluster at its maximum, its nodes now; grid/execution/capacity.clusters): the
    maximum, not what a cold autoscaling cluster has at start (no GPU node yet: one slot, packs of 16
    short trials that then run one after another); at least 1."""
    return max([1] + [shapes.capacity(resources, cluster).slots for cluster in clusters])


def is_short(trial):
    images = cost.trial_images(trial["spec"])
    return images is not None and images <= SHORT_TRIAL_IMAGES


def packs(trials, slot_count):
    """`trials` as a list of packs, in order: the short ones in consecutive packs (neighbours share a
    dataset, a model and often an original) that shrink from at most MAX_PACK to one trial (PACK_SHARE);
    every other trial alone."""
    short_keys = {t["key"] for t in trials if is_short(t)}
    short = [t for t in trials if t["key"] in short_keys]
    packed, start = [], 0
    while start < len(short):
        size = max(1, min(MAX_PACK, (len(short) - start) // (PACK_SHARE * slot_count)))
        packed.append(short[start:start + size])
        start += size
    return packed + [[t] for t in trials if t["key"] not in short_keys]
