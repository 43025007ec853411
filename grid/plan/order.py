"""The order the unlearn trials are scheduled in: round-robin over their MIA-NN references.

Each unlearn trial gets its forget set's MIA-NN reference on its worker, from storage or by computing it
(trainables/references.py). Tune starts trials in the order it is given them, so in the plan's order
(every trial of one forget set, then the next set's) the first slots would all compute the same
reference at once, and the next forget set's reference would wait until its trials came up. Round-robin,
the first trials cover different forget sets and compute different references side by side; later
trials of each set find theirs stored.

Packing (grid/plan/packing.py) packs consecutive short trials, so a pack of k short trials covers up
to k forget sets and computes their references one after another; the packs of the first slots still
cover different sets, and short trials are those of small datasets, whose references take moments.
"""


def reference_group(trial):
    """What identifies a trial's reference in the plan: its Retrain models (their keys name the
    dataset, arch, forget set and evaluation)."""
    return tuple(trial["retrain_keys"])


def round_robin(trials):
    """`trials` interleaved over their reference groups: the first trial of each group (groups in the
    order they first appear), then the second of each, and so on; within a group the plan's order."""
    groups = {}
    for trial in trials:
        groups.setdefault(reference_group(trial), []).append(trial)
    ordered = []
    for rank in range(max((len(g) for g in groups.values()), default=0)):
        ordered += [group[rank] for group in groups.values() if rank < len(group)]
    return ordered
