"""The training recipe of originals and Retrain models as plain data (a grid's `train:` block); the loop
that follows it is trainables/train.py."""
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """Paper B.2: SGD, momentum 0.9, weight decay 5e-4, batch 128, StepLR (lr and epochs per grid)."""
    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 10            # StepLR step_size, in epochs
    lr_gamma: float = 0.1

    def as_dict(self):
        return asdict(self)
