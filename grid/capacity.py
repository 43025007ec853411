"""Can the Ray cluster ever run one trial? Checked on the driver before a stage is scheduled.

Ray queues a task that no node can fit and waits for it without a word, forever on a machine with no
autoscaler (`resources: {gpu: 1}` on a laptop). A fresh local Ray instance (no --address) never grows:
if none of its nodes fits one trial, `run` stops at once naming what a trial asks and what the nodes
have. A cluster given by --address may have an autoscaler that adds a node that fits: `run` says once
that the trials wait for it.
"""
import ray


class CapacityError(ConnectionError):
    """No node can run a trial and none will be added (cli: exit code 1)."""


def _describe(resources):
    return ", ".join(f"{value:g} {name}" for name, value in sorted(resources.items()) if value) or "nothing"


def nodes_resources():
    """Total resources of each alive node (CPU, GPU only: what trials ask for)."""
    return [{k: float(n["Resources"].get(k, 0.0)) for k in ("CPU", "GPU")} for n in ray.nodes() if n.get("Alive")]


def check(resources, address, echo=print, nodes=None):
    """Raise CapacityError when no node fits a trial of `resources` ({cpu, gpu}) and `address` is a fresh
    local instance; on a cluster, echo once that the trials wait for its autoscaler."""
    need = {"CPU": float(resources["cpu"]), "GPU": float(resources["gpu"])}
    nodes = nodes_resources() if nodes is None else nodes
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return
    have = "; ".join(_describe(node) for node in nodes) or "no nodes"
    if address in (None, "local"):
        raise CapacityError(f"no node of this Ray instance can run a trial: each asks for {_describe(need)} "
                            f"(the grid's resources), the nodes have {have}. Lower resources.cpu/gpu, or run on "
                            "a cluster that has such nodes (--address)")
    echo(f"no node of the cluster at {address} can run a trial yet: each asks for {_describe(need)}, the nodes "
         f"have {have}; the trials wait for the cluster's autoscaler to add one (a cluster without one waits "
         "forever: stop with Ctrl-C and lower resources)")
