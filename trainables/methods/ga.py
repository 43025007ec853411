"""GA (Thudi et al.): gradient ascent on the forget set only, i.e. minimise -CE(forget).

lr 1e-3 is the top of the 1e-4…1e-3 range the reference code uses; 20 epochs (paper B.2). GA has no retain
term, so large budgets destroy the model: that is the method, not a bug.
"""
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods.task import finetune


def negative_cross_entropy(logits, labels):
    return -F.cross_entropy(logits, labels)


@register("ga", epochs=20, lr=1e-3, batch_size=128, momentum=0.9, weight_decay=5e-4)
def run(task, params):
    model = task.fresh_copy()
    return finetune(task, model, task.forget_x, task.forget_y, negative_cross_entropy, params)
