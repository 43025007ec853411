"""GPU memory of packed trials: the allocator cap leaves room for each process's CUDA context, and the
bundled paper recipes fit a 0.25 share of a 24 GB GPU by an estimate from shapes (trainables/gpu_memory.py).

No GPU here: the cap is a pure function, and device_for's CUDA branch runs against a stubbed torch.cuda.
"""
import dataclasses
import inspect
import math

import pytest
import torch

from grid.plan import config
from trainables import gpu_memory, methods, trial
from trainables.datasets import get_info
from trainables.gpu_memory import GiB
from trainables.methods import bu_shrink, l2ul

A10G = 23028 * 2**20      # a "24 GB" GPU as the driver reports it (nvidia-smi on a g5 instance: 23028 MiB)
H100 = 80 * 10**9 * 0.99


@pytest.mark.parametrize("total", [A10G, H100], ids=["24GB", "80GB"])
@pytest.mark.parametrize("share", [0.25, 0.5, 0.3, 0.1])
def test_the_trials_one_gpu_holds_fit_with_their_contexts(share, total):
    fraction = gpu_memory.allocator_fraction(share, total)
    trials = math.floor(1 / share + 1e-9)        # what Ray packs on one GPU
    assert trials * (fraction * total + gpu_memory.CUDA_CONTEXT_BYTES) <= total * (1 + 1e-12)   # float rounding
    assert fraction * total == pytest.approx(share * total - gpu_memory.CUDA_CONTEXT_BYTES)


@pytest.mark.parametrize("share", [1, 1.0, 2])
def test_a_whole_gpu_is_not_capped(share):
    assert gpu_memory.allocator_fraction(share, A10G) is None


def test_a_share_too_small_for_the_context_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"resources\.gpu 0\.03 .* at least 0\.07"):
        gpu_memory.allocator_fraction(0.03, A10G)


def test_device_for_caps_a_fractional_trial_below_its_share(monkeypatch):
    """trial.device_for's CUDA branch, with torch.cuda stubbed: the cap set is allocator_fraction's."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("Props", (), {"total_memory": A10G}))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device: calls.append(fraction))
    assert trial.device_for({"use_gpu": True, "gpu": 0.25}).type == "cuda"
    assert calls == [gpu_memory.allocator_fraction(0.25, A10G)] and calls[0] < 0.25
    trial.device_for({"use_gpu": True, "gpu": 1})
    assert len(calls) == 1                      # a whole GPU: no cap


def test_the_batches_and_pools_counted_are_the_ones_the_methods_use():
    assert inspect.signature(l2ul.adversarial_set).parameters["chunk"].default == gpu_memory.ATTACK_BATCH
    assert inspect.signature(bu_shrink.nearest_wrong_labels).parameters["batch_size"].default == gpu_memory.ATTACK_BATCH
    assert methods.METHODS["scar"].defaults["num_surrogates"] == gpu_memory.SCAR_SURROGATES


def test_activation_count_bounds_what_autograd_keeps():
    """The estimate's activations (every module's output, float32) are at least the tensors autograd saves
    for the backward pass of a real training step (parameters excluded), here a ResNet-18 on CPU."""
    from trainables import models
    shapes = gpu_memory.Shapes("resnet18", 10, (3, 32, 32), n_train=100, n_forget=10, batch_size=4)
    model = models.build("resnet18", 10, (3, 32, 32)).train()
    parameters = {p.data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        if tensor.data_ptr() not in parameters:
            saved[tensor.data_ptr()] = max(saved.get(tensor.data_ptr(), 0), tensor.numel() * tensor.element_size())
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(4, 3, 32, 32)).sum()
    kept, _ = gpu_memory.activation_bytes(gpu_memory.model_on_meta(shapes), shapes, 4)
    assert 0 < sum(saved.values()) <= kept


def grid_cells(grid):
    """(dataset, arch, Shapes, share) of every (dataset, arch) of a bundled grid: its largest forget set,
    and the largest batch of its training recipe and of its methods' params (defaults included)."""
    plan = config.load(grid)
    trials = [t["spec"] for t in plan.original + plan.retrain + plan.unlearn]
    for dataset, arch in sorted({(spec["dataset"], spec["arch"]) for spec in trials}):
        specs = [spec for spec in trials if (spec["dataset"], spec["arch"]) == (dataset, arch)]
        batches = [spec["train"]["batch_size"] for spec in specs] + [
            methods.resolve_params(spec["method"], spec["params"]).get("batch_size", 0)
            for spec in specs if spec.get("method") in methods.METHODS]
        forget = max(len(spec["forget_classes"]) for spec in specs if "forget_classes" in spec)
        yield dataset, arch, gpu_memory.Shapes.for_grid(get_info(dataset), arch, forget, max(batches)), \
            plan.grid["resources"]["gpu"]


@pytest.mark.parametrize("grid", ["paper-tinyimagenet", "paper-cifar100"])
def test_paper_recipes_fit_a_quarter_of_a_24gb_gpu(grid, capsys):
    for dataset, arch, shapes, share in grid_cells(grid):
        assert share == 0.25
        cap = gpu_memory.allocator_fraction(share, A10G) * A10G
        worst, total, table = gpu_memory.peak_estimate(shapes)
        as_float32 = gpu_memory.peak_estimate(dataclasses.replace(shapes, stored_bytes=4))[1]
        with capsys.disabled():
            print(f"\n{grid} {dataset}/{arch}: peak {total / GiB:.2f} GiB ({worst}); allocator cap {cap / GiB:.2f} GiB "
                  f"(usable {gpu_memory.ALLOCATOR_MARGIN * cap / GiB:.2f}); with float32 stored inputs {as_float32 / GiB:.2f} GiB")
            print("\n".join(f"  {name}: {sum(parts.values()) / GiB:.2f} GiB" for name, parts in table.items()))
            print(gpu_memory.breakdown(table, worst))
        assert total <= gpu_memory.ALLOCATOR_MARGIN * cap, \
            f"{dataset}/{arch}: {worst} needs {total / GiB:.2f} GiB, more than {gpu_memory.ALLOCATOR_MARGIN} x the cap"
