"""RL (Golatkar et al.): forget samples relabelled uniformly at random + CE on retain.

The random label excludes the true label and, for multi-class forgetting, every forget class (our
choice: a label of another forget class would teach that class back). Labels are drawn once,
from the unlearning seed, as in the SalUn reference code. lr 0.01 (the reference code's), 20 epochs.
"""
import torch
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods.task import finetune


def random_other_labels(labels, forget_classes, num_classes, generator):
    """For each label, a class drawn uniformly from the classes that are not forget classes."""
    allowed = torch.tensor([c for c in range(num_classes) if c not in set(forget_classes)])
    picks = torch.randint(len(allowed), (len(labels),), generator=generator)
    return allowed[picks]


def relabelled_union(task, generator):
    """(x, y) = retain with true labels ∪ forget with random retained labels."""
    random_labels = random_other_labels(task.forget_y, task.forget_classes, task.num_classes, generator)
    return torch.cat([task.retain_x, task.forget_x]), torch.cat([task.retain_y, random_labels])


@register("rl", epochs=20, lr=0.01, batch_size=128, momentum=0.9, weight_decay=5e-4)
def run(task, params):
    model = task.fresh_copy()
    x, y = relabelled_union(task, task.generator())
    return finetune(task, model, x, y, F.cross_entropy, params)
