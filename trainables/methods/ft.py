"""FT (Warnecke et al.): fine-tune on the retain set only, CE; lr 0.01, 20 epochs (paper B.2)."""
import torch.nn.functional as F

from trainables.methods import register
from trainables.methods.task import finetune


@register("ft", epochs=20, lr=0.01, batch_size=128, momentum=0.9, weight_decay=5e-4)
def run(task, params):
    model = task.fresh_copy()
    return finetune(task, model, task.retain_x, task.retain_y, F.cross_entropy, params)
