"""While trials wait for nodes, a line a minute: how many wait, the shape they need, and what the
autoscaler says (nodes up, launches in flight, launches that failed and why).

Without it the driver says once that the trials wait for the autoscaler (grid/execution/capacity.py)
and then nothing, for as long as a launch keeps failing: a G-instance quota of 0 on a fresh AWS
account, or no spot capacity, shows up only in the head's monitor log. The autoscaler's own report
says it; this callback reads it and prints it where the user is looking.

The report comes from where the head's monitor writes it: the v2 autoscaler (what `ray up` runs)
reports to the GCS, read with ray.autoscaler.v2.sdk.get_cluster_status; the v1 monitor writes
`__autoscaling_status` to the key-value store (what capacity.py reads). `report()` normalises either to
{"active": {type: n}, "launching": {type: n}, "failed": {type: (count, last reason)}}, None when
no autoscaler reports. `Waiting` takes the clock and the report source as arguments, so the tests drive
it with fakes.
"""
import time

from ray import tune

from grid.plan import shapes

INTERVAL_S = 60
FAILURE_WINDOW_S = 600   # failed launches older than this are history, not why the trials wait now
REASON_CHARS = 200       # an AWS error message is long; its first sentence names the cause


class Waiting(tune.Callback):
    """Every `interval_s` of `clock()`, if trials are PENDING while the cluster grows towards them (the
    autoscaler reports launches in flight or failed) or while nothing has started, reported or ended
    for a whole interval, echo one line. Trials that merely wait their turn on a busy cluster at its
    maximum make no line."""

    def __init__(self, resources, echo, clock=time.monotonic, source=None, interval_s=INTERVAL_S):
        self.resources, self.echo, self.clock, self.source = resources, echo, clock, source or report
        self.interval_s = interval_s
        self.next_at = self.last_event = self.waiting_since = None

    def __getstate__(self):
        # as stages.Progress: Tune pickles callbacks into its experiment state; echo, clock and source
        # may not pickle and are not state
        return {"resources": self.resources, "interval_s": self.interval_s}

    def __setstate__(self, state):
        self.__dict__.update(state, echo=print, clock=time.monotonic, source=report, next_at=None,
                             last_event=None, waiting_since=None)

    def _progress(self, *args, **info):
        self.last_event = self.clock()

    on_trial_start = on_trial_result = on_trial_complete = on_trial_error = _progress

    def on_step_begin(self, iteration, trials, **info):
        now = self.clock()
        if self.next_at is None:
            self.next_at = now + self.interval_s
            self.last_event = now if self.last_event is None else self.last_event
            return
        if now < self.next_at:
            return
        self.next_at = now + self.interval_s
        pending = sum(t.status == "PENDING" for t in trials)
        if not pending:
            self.waiting_since = None
            return
        view = self.source()
        growing = view is not None and bool(view["launching"] or view["failed"])
        stalled = now - self.last_event >= self.interval_s
        if not (growing or stalled):
            self.waiting_since = None
            return
        if self.waiting_since is None:
            self.waiting_since = now - self.interval_s
        running = sum(t.status == "RUNNING" for t in trials)
        self.echo(line(pending, running, self.resources, view, (now - self.waiting_since) / 60))


def line(pending, running, resources, view, minutes):
    """The waiting line, e.g. `waiting for nodes (3 min): 40 trials pending, each {cpu: 4, gpu: 0.25},
    2 running; autoscaler: up gpu_spot_g5 ×2; launching gpu_spot_g5 ×3; failed gpu_spot_g6 ×2
    (InsufficientInstanceCapacity: ...)`."""
    text = (f"  waiting for nodes ({minutes:.0f} min): {pending} trial(s) pending, each "
            f"{shapes.describe(resources)}, {running} running; ")
    return text + (describe(view) if view is not None else
                   "autoscaler: no report (a cluster without one never grows: Ctrl-C; `ray status` on the head)")


def describe(view):
    def counts(mapping):
        return ", ".join(f"{name} ×{n}" for name, n in sorted(mapping.items())) or "none"
    parts = [f"autoscaler: up {counts(view['active'])}", f"launching {counts(view['launching'])}"]
    if view["failed"]:
        parts.append("failed " + "; ".join(f"{name} ×{n} ({_short(reason)})"
                                           for name, (n, reason) in sorted(view["failed"].items())))
    return "; ".join(parts)


def _short(reason):
    reason = " ".join(str(reason or "no reason given").split())
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 1] + "…"


def from_cluster_status(status, now):
    """The view of a v2 ClusterStatus (ray.autoscaler.v2.schema), or None when no v2 autoscaler reports."""
    if str(status.stats.autoscaler_version or "0") == "0":
        return None
    view = {"active": {}, "launching": {}, "failed": {}}
    for node in list(status.active_nodes) + list(status.idle_nodes):
        _add(view["active"], node.ray_node_type_name)
    for launch in status.pending_launches:
        _add(view["launching"], launch.ray_node_type_name, launch.count)
    for node in status.pending_nodes:   # allocated, Ray still starting on it
        _add(view["launching"], node.ray_node_type_name)
    for launch in sorted(status.failed_launches, key=lambda launch: launch.failed_ts_s or 0):
        if launch.failed_ts_s is not None and now - launch.failed_ts_s > FAILURE_WINDOW_S:
            continue
        count, _ = view["failed"].get(launch.ray_node_type_name, (0, None))
        view["failed"][launch.ray_node_type_name] = (count + launch.count, launch.details)
    return view


def from_v1_report(status):
    """The view of the v1 monitor's `__autoscaling_status` report (decoded JSON), or None."""
    summary = (status or {}).get("autoscaler_report")
    if not summary:
        return None
    view = {"active": {}, "launching": {}, "failed": {}}
    for mapping in (summary.get("active_nodes") or {}, summary.get("idle_nodes") or {}):
        for name, n in mapping.items():
            _add(view["active"], name, n)
    for name, n in (summary.get("pending_launches") or {}).items():
        _add(view["launching"], name, n)
    for _ip, name, _status in summary.get("pending_nodes") or []:
        _add(view["launching"], name)
    availability = (summary.get("node_availability_summary") or {}).get("node_availabilities") or {}
    for name, record in availability.items():
        if not record.get("is_available", True):
            info = record.get("unavailable_node_information") or {}
            reason = ": ".join(part for part in (info.get("category"), info.get("description")) if part)
            view["failed"][name] = (1, reason or None)
    return view


def _add(mapping, name, count=1):
    mapping[name] = mapping.get(name, 0) + count


def report():
    """What the head's autoscaler reports now, normalised (module docstring); None without one."""
    import ray
    from grid.execution import capacity
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status
        view = from_cluster_status(get_cluster_status(ray.get_runtime_context().gcs_address), time.time())
        if view is not None:
            return view
    except Exception:   # no v2 autoscaler state, an older GCS, a timeout: try the v1 report
        pass
    try:
        return from_v1_report(capacity.autoscaler_report())
    except Exception:
        return None
