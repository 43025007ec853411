"""Test plugin (UNLEARN_GRID_PLUGINS=<this file>, trainables/plugins.py): gates that hold a trial at a known
point until the test lets it go, in whichever process runs the trial: the test's own Ray workers, those of
an `unlearn-grid run` subprocess, or another node's. A test kills a driver, a worker or a server while a
trial is known to wait at a gate, instead of hoping to catch work in flight.

Configured by $UNLEARN_GRID_TEST_GATES/gates.json (tests/gates.py writes it):

    {"NAME": {"stage": "original", "epoch": 3, "pass_first": 0, "parties": 0}, ...}

- stage original|retrain|unlearn|search_trial with `epoch`: the end of that epoch of such a trial (after its
  checkpoint); stage "method": the start of the method `gate` below.
- A trial at a gate claims the next arrival file NAME/arrived.N (N = 0, 1, ... in arrival order, created
  whole and exclusively) holding JSON {pid, key, run_id, stage, epoch, node_id, gpu_ids}. Arrivals below
  `pass_first` go on at once; the others wait until NAME/release exists or, with `parties`, until that
  many arrivals exist (a rendezvous: they were all there at once).
- No gate waits longer than TIMEOUT_S: the trial then fails, so a broken test leaves nothing blocked.

Methods: `gate` (waits at the "method" gates, then fine-tunes on the retain set as FT does) and
`fails_on_purpose` (always raises).
"""
import json
import os
import time

import torch.nn.functional as F

from trainables import methods, plugins

ENV = "UNLEARN_GRID_TEST_GATES"
TIMEOUT_S = 300
POLL_S = 0.05


def _gates():
    folder = os.environ.get(ENV)
    if not folder or not os.path.isfile(os.path.join(folder, "gates.json")):
        return folder, {}
    with open(os.path.join(folder, "gates.json")) as f:
        return folder, json.load(f)


def _arrive(folder, name, info):
    """Claim NAME/arrived.N for the lowest free N; returns N."""
    gate = os.path.join(folder, name)
    os.makedirs(gate, exist_ok=True)
    draft = os.path.join(gate, f"draft.{os.getpid()}.{time.monotonic_ns()}")
    with open(draft, "w") as f:
        json.dump(info, f)
    try:
        number = 0
        while True:
            try:
                os.link(draft, os.path.join(gate, f"arrived.{number}"))   # fails if it exists: exclusive
                return number
            except FileExistsError:
                number += 1
    finally:
        os.unlink(draft)


def _wait(folder, name, setting, info):
    number = _arrive(folder, name, info)
    if number < setting.get("pass_first", 0):
        return
    gate, parties = os.path.join(folder, name), setting.get("parties", 0)
    deadline = time.monotonic() + TIMEOUT_S
    while not os.path.exists(os.path.join(gate, "release")):
        if parties and sum(entry.startswith("arrived.") for entry in os.listdir(gate)) >= parties:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"test gate {name!r} was not released within {TIMEOUT_S} s")
        time.sleep(POLL_S)


def _where():
    try:
        import ray
        runtime = ray.get_runtime_context()
        return {"node_id": runtime.get_node_id(),
                "gpu_ids": ",".join(str(i) for i in runtime.get_accelerator_ids().get("GPU", []))}
    except Exception:   # not in a Ray worker (a test calling the trainable directly)
        return {"node_id": None, "gpu_ids": ""}


def _pass(stage, key, epoch, run_id):
    folder, gates = _gates()
    for name, setting in sorted(gates.items()):
        if setting["stage"] == stage and setting.get("epoch") == epoch:
            _wait(folder, name, setting, {"pid": os.getpid(), "key": key, "run_id": run_id, "stage": stage,
                                          "epoch": epoch, **_where()})


@plugins.on_epoch
def at_epoch(stage, key, epoch, run_id):
    _pass(stage, key, epoch, run_id)


@methods.register("gate", epochs=1, lr=0.01, batch_size=128, momentum=0.9, weight_decay=5e-4)
def gate(task, params):
    import mlflow
    run = mlflow.active_run()
    _pass("method", None, None, run.info.run_id if run else None)
    return methods.finetune(task, task.fresh_copy(), task.retain_x, task.retain_y, F.cross_entropy, params)


@methods.register("fails_on_purpose", epochs=1)
def fails_on_purpose(task, params):
    raise RuntimeError("this method fails on purpose")
