"""What a checkpoint costs against the epoch it follows: the demo's original (digits, small_cnn) trained
plainly, then with a checkpoint to storage (trainables/checkpoints.py) after every epoch, in one process.

    .venv/bin/python bench/checkpoint_cost.py [--storage DIR_OR_URI] [--epochs N]   # ~30 s here

Prints each side's median wall time over 3 repeats, the seconds per checkpoint and their ratio to an
epoch: what `checkpoint_minutes: 0` adds to a trial. A bucket URI measures an object store instead.
"""
import argparse
import statistics
import sys
import tempfile
import time

import torch

from grid.plan import config
from trainables import checkpoints, data, models
from trainables.recipe import Recipe
from trainables.train import seed_everything, train_classifier


def train(spec, dataset, on_epoch):
    seed_everything(spec["seed"])
    model = models.build(spec["arch"], dataset.info.num_classes, dataset.info.input_shape)
    recipe = Recipe(**spec["train"])
    started = time.perf_counter()
    train_classifier(model, dataset.train_x, dataset.train_y, recipe, generator=torch.Generator().manual_seed(0),
                     device=torch.device("cpu"), on_epoch=on_epoch)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="folder or bucket URI (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plan = config.load("demo")
    spec = {**plan.original[0]["spec"], "train": {**plan.original[0]["spec"]["train"], "epochs": args.epochs}}
    dataset = data.load(spec["dataset"])
    with tempfile.TemporaryDirectory() as folder:
        storage = args.storage or folder

        def checkpoint(epoch, metrics, snapshot):
            checkpoints.save(storage, "bench", {"key": "bench", "run_id": "", "stage": "original", "training": snapshot()})
        plain, checkpointed = [], []
        for _ in range(3):   # interleaved, so drift in the machine's speed hits both sides alike
            plain.append(train(spec, dataset, None))
            checkpointed.append(train(spec, dataset, checkpoint))
        checkpoints.delete(storage, "bench")
    plain, checkpointed = statistics.median(plain), statistics.median(checkpointed)
    per_checkpoint = (checkpointed - plain) / args.epochs
    print(f"{args.epochs} epochs of {spec['arch']} on {spec['dataset']}, 1 thread, median of 3: "
          f"plain {plain:.2f} s, every epoch checkpointed {checkpointed:.2f} s ({checkpointed / plain:.2f}x); "
          f"{per_checkpoint * 1000:.1f} ms per checkpoint = {per_checkpoint / (plain / args.epochs):.2f} of an epoch")


if __name__ == "__main__":
    sys.exit(main())
