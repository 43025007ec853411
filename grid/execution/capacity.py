"""Can the Ray cluster ever run one trial? Checked on the driver before a stage is scheduled.

Ray queues a task that no node can fit and waits for it without a word, forever on a machine with no
autoscaler (`resources: {gpu: 1}` on a laptop). A fresh local Ray instance (no --address) never grows:
if none of its nodes fits one trial, `run` stops at once naming what a trial asks and what the nodes
have. A cluster given by --address may have an autoscaler that adds a node that fits: `run` says once
that the trials wait for it. Whether it has one, its head's monitor tells: every few seconds it writes
its report to the cluster's key-value store, and a cluster started without --autoscaling-config (not
by `ray up`) reports Ray's read-only provider, whose node types are its nodes' ids ("node_<id>"); such a
cluster never grows, and `run` stops as on a local instance.

`clusters()` says how large the cluster can grow, for pack sizes (grid/plan/packing.py): a cold
autoscaling cluster has no GPU node yet, so its resources at start say one trial at a time. Ray 2.60
tells a driver nothing reliable about the autoscaler's node types and their max_workers: the GCS has a
slot for them (the autoscaler's ClusterConfig, `ray._private.state.state.get_cluster_config()`), but
Ray 2.60's own autoscaler never fills it (v2's Autoscaler reports its config from a later release on),
and the monitor's reports name node types without their maxima. So the cluster-launcher file comes
first: `run --cluster FILE`, or $UNLEARN_GRID_CLUSTER, which cluster.yaml's head exports as
~/ray_bootstrap_config.yaml, the copy of the file its autoscaler reads; then the GCS's ClusterConfig
when a platform fills it; the nodes alive now always count too.
"""
import json
import os
import time

import ray

from grid.plan import shapes

UNLIMITED_NODES = 10_000               # a node group without a maximum (max_count -1)

REPORT_WAIT_S = 12   # the monitor reports every 5 s (AUTOSCALER_UPDATE_INTERVAL_S): two reports and a margin


class CapacityError(ConnectionError):
    """No node can run a trial and none will be added (cli: exit code 1)."""


def _describe(resources):
    return ", ".join(f"{value:g} {name}" for name, value in sorted(resources.items()) if value) or "nothing"


def nodes_resources():
    """Total resources of each alive node (CPU, GPU only: what trials ask for)."""
    return [{k: float(n["Resources"].get(k, 0.0)) for k in ("CPU", "GPU")} for n in ray.nodes() if n.get("Alive")]


def autoscaler_report():
    """The head monitor's last report, decoded (None when it has written none)."""
    from ray.experimental.internal_kv import _internal_kv_get
    raw = _internal_kv_get("__autoscaling_status")   # ray_constants.DEBUG_AUTOSCALING_STATUS
    return json.loads(raw) if raw else None


def has_autoscaler(wait_s=REPORT_WAIT_S):
    """True when the connected cluster's monitor runs an autoscaler that can add nodes, False when it runs
    the read-only provider, None when no report came within `wait_s` (a monitor that is not running)."""
    deadline = time.monotonic() + wait_s
    while True:
        report = autoscaler_report() or {}
        types = (report.get("autoscaler_report") or {}).get("node_type_mapping") or {}
        if types:
            return any(node_type != f"node_{node_id}" for node_id, node_type in types.items())
        if time.monotonic() >= deadline:
            return None
        time.sleep(1)


def check(resources, address, echo=print, nodes=None, autoscaler=has_autoscaler):
    """Raise CapacityError when no node fits a trial of `resources` ({cpu, gpu}) and the cluster cannot
    grow: a fresh local instance, or a cluster whose monitor has no autoscaler (`autoscaler()`: True,
    False, or None when unknown); else echo once that the trials wait for its autoscaler."""
    need = {"CPU": float(resources["cpu"]), "GPU": float(resources["gpu"])}
    nodes = nodes_resources() if nodes is None else nodes
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return
    have = "; ".join(_describe(node) for node in nodes) or "no nodes"
    if address in (None, "local"):
        raise CapacityError(f"no node of this Ray instance can run a trial: each asks for {_describe(need)} "
                            f"(the grid's resources), the nodes have {have}. Lower resources.cpu/gpu, or run on "
                            "a cluster that has such nodes (--address)")
    autoscaler = autoscaler()
    if autoscaler is False:
        raise CapacityError(f"no node of the cluster at {address} can run a trial: each asks for {_describe(need)} "
                            f"(the grid's resources), the nodes have {have}, and the cluster has no autoscaler "
                            "(its head was started without --autoscaling-config) to add one. Lower "
                            "resources.cpu/gpu, add such a node (`ray start --address …`), or start the cluster "
                            "with `ray up cluster.yaml`")
    unknown = " (if it has one: no autoscaler report came; without one they wait forever: Ctrl-C)" if autoscaler is None else ""
    echo(f"no node of the cluster at {address} can run a trial yet: each asks for {_describe(need)}, the nodes "
         f"have {have}; the trials wait for the cluster's autoscaler to add one{unknown}")


def clusters():
    """The shapes.Cluster views of the connected cluster, for its maximum slots: the nodes alive now,
    plus the cluster-launcher file named by $UNLEARN_GRID_CLUSTER or else the GCS's ClusterConfig."""
    found = [shapes.from_nodes(nodes_resources())]
    path = os.environ.get(shapes.ENV_CLUSTER)
    if path:
        found.append(shapes.load(path))     # cli checked it before anything ran
    else:
        grouped = _gcs_cluster_config()
        if grouped is not None:
            found.append(grouped)
    return found


def _gcs_cluster_config():
    """The autoscaler's node groups as the GCS records them (None when nothing is recorded: Ray 2.60's
    own autoscalers record nothing there)."""
    try:
        from ray._private.state import state
        config = state.get_cluster_config()
    except Exception:   # a private API: absent or changed in another Ray, a GCS that does not answer
        return None
    if config is None or not config.node_group_configs:
        return None
    types = tuple(shapes.NodeType(group.name or f"group{i}", float(group.resources.get("CPU", 0)),
                                  float(group.resources.get("GPU", 0)),
                                  UNLIMITED_NODES if group.max_count < 0 else int(group.max_count))
                  for i, group in enumerate(config.node_group_configs))
    return shapes.Cluster("the autoscaler's cluster config in the GCS", types)
