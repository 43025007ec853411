"""Training throughput of ResNet-18 on CIFAR-shaped data: torchvision DataLoader vs our plain and fast paths.

    .venv/bin/python bench/train_throughput.py                     # CPU here: ~1.5 min (small step counts)
    python bench/train_throughput.py --steps 200 --batch-size 512  # a GPU: ~1 min, plus compile time
    python bench/train_throughput.py --data-root DIR               # real CIFAR-10 under DIR (cifar-10-batches-py/)
    python bench/train_throughput.py --epoch --data-root DIR       # also one full CIFAR-10 epoch on the fast path
    python bench/train_throughput.py --save throughput.json        # for `unlearn-grid validate --throughput`

The same model, batch size and optimizer (the paper's SGD) go through three input paths, in this process:
  dataloader  the reference implementations' way: torchvision's CIFAR10-style dataset (a PIL image per
              sample) with RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize in
              DataLoader workers, pinned batches copied to the device each step, float32;
  plain       trainables/train.py with Speed(): uint8 tensors in host memory, a batch copied to the
              device each step, crop + flip + normalise there, float32 (`resources.fast_path: off`);
  fast        Speed from speed_for(device, "on"): the whole uint8 training set on the device,
              crop + flip + normalise on the device, channels_last + bf16 autocast on CUDA
              (+ torch.compile with --compile): the grid's default on a GPU.
Each path runs --warmup steps, then --steps timed steps (synchronised); prints images/s and the ratio
of each to the dataloader path. Without --data-root the data is random uint8 of CIFAR-10's shape.
"""
import argparse
import functools
import json
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from trainables import data, models
from trainables.train import Speed, run_epochs, sgd, speed_for

CIFAR10 = data.get_info("cifar10")


class PilImages(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: HWC uint8 array -> PIL image -> transform."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def cifar_like(data_root, size):
    """(uint8 NCHW tensor, int64 labels) of real CIFAR-10 train images, or random ones of that shape."""
    if data_root:
        dataset = data.load("cifar10", data_root)
        return dataset.train_x[:size], dataset.train_y[:size]
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator),
            torch.randint(0, 10, (size,), generator=generator))


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_dataloader(model, x, y, device, batch_size, warmup, steps, workers):
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR10.mean, CIFAR10.std)])
    images = x.permute(0, 2, 3, 1).contiguous().numpy()            # back to CIFAR's on-disk HWC layout
    loader = torch.utils.data.DataLoader(PilImages(images, y.numpy(), transform), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=True, persistent_workers=workers > 0)
    optimizer = sgd(model, 0.1)
    model.train()
    started, done = None, 0
    while done < warmup + steps:
        for xb, yb in loader:
            if done == warmup:
                synchronise(device)
                started = time.perf_counter()
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    synchronise(device)
    return steps * batch_size / (time.perf_counter() - started)


def time_run_epochs(model, x, y, device, batch_size, warmup, steps, speed):
    """Our loop (run_epochs) on exactly `warmup` then `steps` batches, the same augment as trial.py."""
    augment = functools.partial(data.training_input, CIFAR10)
    if speed.compile:
        model.compile()
    optimizer = sgd(model, 0.1)
    generator = torch.Generator().manual_seed(0)
    common = dict(epochs=1, batch_size=batch_size, generator=generator, device=device, augment=augment, speed=speed)
    if speed.data_on_device:                  # the trial moves the training set once, before any step
        x, y = x.to(device), y.to(device)
    run_epochs(model, x[:warmup * batch_size], y[:warmup * batch_size], F.cross_entropy, optimizer, **common)
    synchronise(device)
    started = time.perf_counter()
    run_epochs(model, x[:steps * batch_size], y[:steps * batch_size], F.cross_entropy, optimizer, **common)
    synchronise(device)
    return steps * batch_size / (time.perf_counter() - started)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet18", help="any registered arch taking 3x32x32 inputs")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 32 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per path (default: 100 CUDA, 4 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 20 CUDA, 1 CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/ (real CIFAR-10)")
    parser.add_argument("--compile", action="store_true", help="torch.compile on the fast path")
    parser.add_argument("--paths", default="dataloader,plain,fast")
    parser.add_argument("--epoch", action="store_true", help="then time one full epoch (50k images) on the fast path")
    parser.add_argument("--save", default=None, help="write the fast path's images/s as JSON for the cost model")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (512 if cuda else 32)
    steps = args.steps or (100 if cuda else 4)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 1)
    x, y = cifar_like(args.data_root, max(warmup + steps, 2) * batch_size)
    print(f"{args.arch} on {device_name(device)}; batch {batch_size}, {warmup} warm-up + {steps} timed steps, "
          f"{'CIFAR-10 from ' + args.data_root if args.data_root else 'random CIFAR-shaped data'}")
    speeds = {"plain": Speed(), "fast": speed_for(device, "on", args.compile)}
    results = {}
    for path in args.paths.split(","):
        torch.manual_seed(0)
        model = models.build(args.arch, 10, (3, 32, 32)).to(device)
        if path == "dataloader":
            results[path] = time_dataloader(model, x, y, device, batch_size, warmup, steps, args.workers)
        else:
            results[path] = time_run_epochs(model, x, y, device, batch_size, warmup, steps, speeds[path])
        base = results.get("dataloader")
        ratio = f"  {results[path] / base:5.2f}x dataloader" if base else ""
        detail = f" ({speeds[path]})" if path in speeds else f" ({args.workers} workers)"
        print(f"  {path:10s} {results[path]:10.1f} images/s{ratio}{detail}", flush=True)
    if args.epoch:
        full, labels = cifar_like(args.data_root, 50000)
        torch.manual_seed(0)
        model = models.build(args.arch, 10, (3, 32, 32)).to(device)
        seconds = len(full) / time_run_epochs(model, full, labels, device, batch_size, warmup, len(full) // batch_size,
                                              speeds["fast"])
        print(f"  one epoch of {len(full)} images on the fast path: {seconds:.1f} s")
    if args.save and "fast" in results:
        with open(args.save, "w") as handle:
            json.dump({"device": device_name(device), "path": "fast",
                       "images_per_second": {f"{args.arch}/32": round(results["fast"], 1)}}, handle, indent=1)
        print(f"wrote {args.save}")
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=1)
    main()
