"""Trial shapes against a cluster's node types: how many trials fit per node and per GPU, and how many
the cluster can run at once when it has grown to its maximum.

Pure: no Ray. A cluster is read from a Ray cluster-launcher file (`cluster.yaml`, or the
`~/ray_bootstrap_config.yaml` that `ray up` leaves on the head) or built from node shapes the driver
sees (grid/execution/capacity.py). `unlearn-grid validate --cluster FILE`, the wall-clock of the cost
estimate (grid/plan/cost.py) and the pack sizes of a run (grid/plan/packing.py) all use `capacity` here,
so they agree.

Ray places a trial on one node only, so what fits is counted per node: floor(node CPUs / trial cpu)
and floor(node GPUs / trial gpu), the smaller of the two. A node that fits fewer trials than its GPUs
could hold leaves part of each GPU idle while the node is billed whole (e.g. {cpu: 4, gpu: 0.25} on a
{CPU: 4, GPU: 1} node: one trial, 0.75 of the GPU idle).
"""
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

# A cluster-launcher file for `run` (as `run --cluster FILE`): cluster.yaml's head exports its
# ~/ray_bootstrap_config.yaml here, so runs on the head size their packs for the cluster's maximum
ENV_CLUSTER = "UNLEARN_GRID_CLUSTER"
# Ray keeps resource amounts in fixed point (1e-4); 0.9 / 0.3 is 2.9999999999999996 in floats
EPSILON = 1e-6


class ClusterFileError(ValueError):
    """A --cluster file that is missing or not a usable Ray cluster-launcher config."""


@dataclass(frozen=True)
class NodeType:
    name: str
    cpu: float
    gpu: float
    max_nodes: int                 # worker types: max_workers; the head: 1
    head: bool = False
    instance_type: str = ""        # e.g. g5.4xlarge ("" when the file does not say)
    market: str = ""               # "spot", "on-demand" ("" when not known)


@dataclass(frozen=True)
class Cluster:
    source: str                    # where it was read from, for messages
    node_types: tuple              # NodeType, the head first
    max_workers: int = None        # global cap on worker nodes (all types together); None: no cap

    @property
    def workers(self):
        return [t for t in self.node_types if not t.head]


@dataclass(frozen=True)
class Fit:
    """Trials of one shape on one node type."""
    node_type: NodeType
    per_node: int
    bound: str                     # "CPU" or "GPU": which resource runs out first ("" when neither is asked)
    idle_gpu: float                # GPU share of one node left idle when it holds per_node trials

    @property
    def per_gpu(self):
        """Trials per GPU of the node (None on a node without GPUs)."""
        return self.per_node / self.node_type.gpu if self.node_type.gpu > 0 else None


@dataclass(frozen=True)
class Capacity:
    """The cluster at its maximum for one shape: the node types as the autoscaler can fill them."""
    fits: tuple                    # Fit per node type, in the cluster's order
    nodes: dict                    # node type name -> nodes counted at the maximum (head: 1)
    slots: int                     # trials at once
    gpus: float                    # GPUs of the nodes that hold those trials (whole GPUs: billed whole)
    capped: bool                   # the global max_workers, not the types' own maxima, limits the workers

    @property
    def trials_per_gpu(self):
        return self.slots / self.gpus if self.gpus > 0 else None


def fit(resources, node):
    """How `resources` ({cpu, gpu}) trials fill one node of type `node` (a NodeType)."""
    cpu, gpu = float(resources["cpu"]), float(resources["gpu"])
    limits = {}
    if cpu > 0:
        limits["CPU"] = math.floor(node.cpu / cpu + EPSILON)
    if gpu > 0:
        limits["GPU"] = math.floor(node.gpu / gpu + EPSILON)
    if not limits:
        return Fit(node, 0, "", node.gpu)   # asks nothing: Ray would not bound it; not a shape we count
    bound = min(limits, key=lambda name: (limits[name], name != "GPU"))   # a tie: GPU-bound (nothing idle)
    per_node = max(0, limits[bound])
    idle = node.gpu - per_node * gpu if per_node else node.gpu
    return Fit(node, per_node, bound, max(0.0, idle) if idle > EPSILON else 0.0)


def capacity(resources, cluster):
    """The most trials of `resources` that `cluster` runs at once once grown to its maximum: the head's
    own, plus worker nodes taken from the node types that fit the most trials per node first, each up to
    its max_workers and all together up to the global max_workers."""
    fits = tuple(fit(resources, t) for t in cluster.node_types)
    nodes = {t.name: 0 for t in cluster.node_types}
    slots, gpus = 0, 0.0
    for f in fits:
        if f.node_type.head and f.per_node:
            nodes[f.node_type.name] = 1
            slots += f.per_node
            gpus += f.node_type.gpu
    budget = cluster.max_workers
    capped = budget is not None and budget < sum(t.max_nodes for t in cluster.workers)
    for f in sorted((f for f in fits if not f.node_type.head and f.per_node), key=lambda f: -f.per_node):
        count = f.node_type.max_nodes if budget is None else min(f.node_type.max_nodes, budget)
        if budget is not None:
            budget -= count
        nodes[f.node_type.name] = count
        slots += count * f.per_node
        gpus += count * f.node_type.gpu
    return Capacity(fits, nodes, slots, gpus, capped)


def warnings(resources, cluster):
    """One line per problem of the shape on the cluster: fits no node type; or leaves GPUs of a node type
    it runs on partly idle."""
    cap = capacity(resources, cluster)
    ask = describe(resources)
    if not cap.slots:
        have = "; ".join(f"{t.name} {{CPU: {t.cpu:g}, GPU: {t.gpu:g}}}" for t in cluster.node_types)
        return [f"no node type of {cluster.source} fits one trial of {ask}: {have}; the trials would wait "
                f"forever. Lower resources.cpu/gpu or add a node type that fits"]
    lines = []
    for f in cap.fits:
        if not f.per_node or not f.idle_gpu:
            continue
        node = f.node_type
        if float(resources["gpu"]) <= 0:
            lines.append(f"{node.name}: the trials ask no GPU, so the node's {node.gpu:g} GPU(s) stay idle while "
                         f"it runs {f.per_node} of them")
            continue
        full = math.floor(node.gpu / float(resources["gpu"]) + EPSILON)
        lines.append(f"{node.name}: {f.per_node} trial(s) per node ({f.bound}-bound: {node.cpu:g} CPUs / "
                     f"{float(resources['cpu']):g} per trial) of the {full} its {node.gpu:g} GPU(s) could hold: "
                     f"{f.idle_gpu:g} GPU idle per node. Ask cpu <= {node.cpu / full:g}, or use a node type with "
                     f">= {full * float(resources['cpu']):g} CPUs per {node.gpu:g} GPU(s)")
    return lines


def describe(resources):
    return f"{{cpu: {float(resources['cpu']):g}, gpu: {float(resources['gpu']):g}}}"


def format_report(resources, cluster):
    """What `validate --cluster` prints: trials per node and per GPU for each node type, the maximum at
    once, and the warnings."""
    cap = capacity(resources, cluster)
    rows = [("node type", "instance", "market", "CPU", "GPU", "trials/node", "trials/GPU", "max nodes", "at once")]
    for f in cap.fits:
        node = f.node_type
        per_gpu = "-" if f.per_gpu is None else f"{f.per_gpu:g}"
        rows.append((node.name + (" (head)" if node.head else ""), node.instance_type or "-", node.market or "-",
                     f"{node.cpu:g}", f"{node.gpu:g}", str(f.per_node), per_gpu, str(node.max_nodes),
                     str(cap.nodes[node.name] * f.per_node)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"cluster {cluster.source}: trials of {describe(resources)} per node type:"]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    workers = sum(n for name, n in cap.nodes.items() if not _is_head(cluster, name))
    cap_note = (f"; the global max_workers {cluster.max_workers} caps the types' "
                f"{sum(t.max_nodes for t in cluster.workers)}" if cap.capped else "")
    per_gpu = "" if cap.trials_per_gpu is None else f", {cap.trials_per_gpu:g} per GPU on {cap.gpus:g} GPUs"
    lines.append(f"  at most {cap.slots} trials at once ({workers} worker nodes{cap_note}{per_gpu})")
    lines += [f"warning: {line}" for line in warnings(resources, cluster)]
    return "\n".join(lines)


def _is_head(cluster, name):
    return any(t.head and t.name == name for t in cluster.node_types)


def _number(value, where, whole=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isinf(value) \
            or (whole and value != int(value)):
        kind = "a whole number >= 0" if whole else "a number >= 0"
        raise ValueError(f"{where} must be {kind}, got {value!r}")
    return int(value) if whole else float(value)


def parse(raw, source):
    """A Cluster from a cluster-launcher config (already parsed YAML); ClusterFileError naming the field."""
    def fail(message):
        return ClusterFileError(f"cluster file {source}: {message}")
    if not isinstance(raw, dict):
        raise fail("not a YAML mapping (expected a Ray cluster-launcher config such as cluster.yaml)")
    types = raw.get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise fail("available_node_types missing or empty (the node types the autoscaler launches)")
    head = raw.get("head_node_type")
    if head not in types:
        raise fail(f"head_node_type {head!r} is not one of available_node_types ({', '.join(map(str, types))})")
    try:
        global_max = _number(raw["max_workers"], "max_workers", whole=True) if "max_workers" in raw else None
        node_types = []
        for name, spec in sorted(types.items(), key=lambda item: item[0] != head):
            where = f"available_node_types.{name}"
            if not isinstance(spec, dict):
                raise ValueError(f"{where} must be a mapping")
            resources = spec.get("resources")
            if not isinstance(resources, dict):
                raise ValueError(f"{where}.resources missing: declare {{CPU: n, GPU: m}} (Ray's AWS provider "
                                 f"can detect them at launch, this check cannot)")
            cpu = _number(resources.get("CPU", 0), f"{where}.resources.CPU")
            gpu = _number(resources.get("GPU", 0), f"{where}.resources.GPU")
            if name == head:
                max_nodes = 1
            elif "max_workers" in spec:
                max_nodes = _number(spec["max_workers"], f"{where}.max_workers", whole=True)
            elif global_max is not None:
                max_nodes = global_max     # Ray's default for a worker type (fill_node_type_min_max_workers)
            else:
                raise ValueError(f"{where}.max_workers missing, and no global max_workers to default to")
            config = spec.get("node_config") if isinstance(spec.get("node_config"), dict) else {}
            market = config.get("InstanceMarketOptions", {}).get("MarketType", "on-demand") \
                if "InstanceType" in config else ""
            node_types.append(NodeType(str(name), cpu, gpu, max_nodes, head=name == head,
                                       instance_type=str(config.get("InstanceType", "")), market=market))
    except ValueError as error:
        raise fail(str(error)) from None
    return Cluster(str(source), tuple(node_types), global_max)


def load(path):
    """The Cluster of a cluster-launcher file; ClusterFileError (one line naming the file and field)."""
    path = Path(path).expanduser()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ClusterFileError(f"cluster file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClusterFileError(f"cluster file {path}: not readable ({error})") from None
    except yaml.YAMLError as error:
        raise ClusterFileError(f"cluster file {path}: not valid YAML ({' '.join(str(error).split())})") from None
    return parse(raw, path)


def from_nodes(nodes, source="the cluster's nodes"):
    """A Cluster of the nodes alive now ([{"CPU": n, "GPU": m}, ...]): each its own type, at most one of
    it, no autoscaler: what a local Ray or a cluster without one can run."""
    return Cluster(source, tuple(NodeType(f"node{i}", float(n.get("CPU", 0)), float(n.get("GPU", 0)), 1)
                                 for i, n in enumerate(nodes)), max_workers=len(nodes))
