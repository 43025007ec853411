"""While trials wait for nodes, a line a minute (grid/execution/waiting.py), and where a run learns how
large the cluster can grow (grid/execution/capacity.clusters). A fake clock and fake autoscaler reports
drive the callback: no Ray cluster, no sleeping. The reports are built from Ray's own classes, so a
Ray that changes their fields fails here. ~2 s."""
import json
import pickle
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from grid import cli
from grid.execution import capacity, waiting
from grid.plan import shapes

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"cpu": 4, "gpu": 0.25}
NOW = 1_700_000_000


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def trials(pending=0, running=0):
    return [SimpleNamespace(status="PENDING")] * pending + [SimpleNamespace(status="RUNNING")] * running


def callback(views):
    """(Waiting, clock, lines): reports come from `views` in turn (the last one repeats)."""
    clock, lines, given = Clock(), [], list(views)

    def source():
        return given.pop(0) if len(given) > 1 else given[0]
    return waiting.Waiting(PAPER, lines.append, clock=clock, source=source), clock, lines


def view(active=None, launching=None, failed=None):
    return {"active": active or {}, "launching": launching or {}, "failed": failed or {}}


def test_trials_that_wait_for_nodes_get_a_line_a_minute_with_what_they_need_and_the_autoscalers_report():
    reports = [view(launching={"gpu_spot_g5": 3}),
               view(active={"gpu_spot_g5": 1}, failed={"gpu_spot_g6": (2, "InsufficientInstanceCapacity: "
                                                                         "We currently do not have sufficient "
                                                                         "g6.4xlarge capacity")})]
    cb, clock, lines = callback(reports)
    cb.on_step_begin(0, trials(pending=40))
    for t in range(0, 60, 5):                  # Tune steps many times a minute: nothing within the first
        clock.now = t
        cb.on_step_begin(1, trials(pending=40))
    assert lines == []
    clock.now = 60
    cb.on_step_begin(2, trials(pending=40))
    clock.now = 90
    cb.on_step_begin(3, trials(pending=40))    # within the next minute: no second line
    clock.now = 120
    cb.on_step_begin(4, trials(pending=36, running=4))   # four run, launches failing: still waiting
    assert len(lines) == 2
    assert lines[0] == ("  waiting for nodes (1 min): 40 trial(s) pending, each {cpu: 4, gpu: 0.25}, 0 running; "
                        "autoscaler: up none; launching gpu_spot_g5 ×3")
    assert lines[1].startswith("  waiting for nodes (2 min): 36 trial(s) pending, each {cpu: 4, gpu: 0.25}, 4 running; "
                               "autoscaler: up gpu_spot_g5 ×1; launching none; failed gpu_spot_g6 ×2 "
                               "(InsufficientInstanceCapacity: We currently do not have sufficient g6.4xlarge")


def test_no_report_is_said_too_and_a_quiet_cluster_at_its_maximum_makes_no_line():
    cb, clock, lines = callback([None])
    cb.on_step_begin(0, trials(pending=5))
    clock.now = 61
    cb.on_step_begin(1, trials(pending=5))     # nothing started for a minute and no autoscaler report
    assert len(lines) == 1 and "autoscaler: no report" in lines[0] and "Ctrl-C" in lines[0]

    cb, clock, lines = callback([view(active={"gpu_spot_g5": 20})])
    cb.on_step_begin(0, trials(pending=100, running=80))
    for minute in range(1, 10):                # trials start and end all the time; nothing is launching
        clock.now = 60 * minute - 1
        cb.on_trial_complete(0, [], None)
        clock.now = 60 * minute
        cb.on_step_begin(minute, trials(pending=100, running=80))
    assert lines == []                         # they wait their turn, not for nodes


def test_nothing_pending_makes_no_line_and_restarts_the_wait():
    cb, clock, lines = callback([view(launching={"w": 1})])
    cb.on_step_begin(0, trials(pending=2))
    clock.now = 60
    cb.on_step_begin(1, trials(pending=2))
    clock.now = 120
    cb.on_step_begin(2, trials(running=2))
    clock.now = 180
    cb.on_step_begin(3, trials(pending=1, running=1))
    assert [line.split(":")[0] for line in lines] == ["  waiting for nodes (1 min)", "  waiting for nodes (1 min)"]


def test_the_callback_pickles_without_its_echo_clock_and_source():
    """Tune pickles callbacks into its experiment state."""
    cb, _, _ = callback([None])
    restored = pickle.loads(pickle.dumps(cb))
    assert restored.resources == PAPER and restored.echo is print and restored.source is waiting.report


def test_a_v2_cluster_status_becomes_the_view_recent_failures_only():
    from ray.autoscaler.v2.schema import ClusterStatus, LaunchRequest, NodeInfo, Stats

    def launch(node_type, count, state, failed_ts=None, details=None):
        return LaunchRequest(instance_type_name="g5.4xlarge", ray_node_type_name=node_type, count=count,
                             state=state, request_ts_s=NOW - 700, failed_ts_s=failed_ts, details=details)
    status = ClusterStatus(
        active_nodes=[NodeInfo("m6i.xlarge", "head", "i-0", "10.0.0.1"), NodeInfo("g5.4xlarge", "gpu_spot_g5", "i-1", "10.0.0.2")],
        idle_nodes=[NodeInfo("g5.4xlarge", "gpu_spot_g5", "i-2", "10.0.0.3")],
        pending_launches=[launch("gpu_spot_g5", 2, LaunchRequest.Status.PENDING)],
        pending_nodes=[NodeInfo("g6.4xlarge", "gpu_spot_g6", "i-3", "10.0.0.4")],
        failed_launches=[launch("gpu_spot_g6", 1, LaunchRequest.Status.FAILED, NOW - 3600, "old"),
                         launch("gpu_spot_g6", 1, LaunchRequest.Status.FAILED, NOW - 30, "MaxSpotInstanceCountExceeded")],
        stats=Stats(autoscaler_version="7"))
    assert waiting.from_cluster_status(status, NOW) == {
        "active": {"head": 1, "gpu_spot_g5": 2}, "launching": {"gpu_spot_g5": 2, "gpu_spot_g6": 1},
        "failed": {"gpu_spot_g6": (1, "MaxSpotInstanceCountExceeded")}}
    assert waiting.from_cluster_status(ClusterStatus(stats=Stats(autoscaler_version="0")), NOW) is None


def test_a_v1_monitor_report_becomes_the_view():
    from ray.autoscaler._private.autoscaler import AutoscalerSummary
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilityRecord, NodeAvailabilitySummary, UnavailableNodeInformation)
    summary = AutoscalerSummary(
        active_nodes={"gpu_spot_g5": 1}, idle_nodes={"gpu_spot_g5": 1},
        pending_nodes=[("10.0.0.5", "gpu_spot_g5", "setting-up")], pending_launches={"gpu_ondemand": 2},
        failed_nodes=[],
        node_availability_summary=NodeAvailabilitySummary({"gpu_spot_g6": NodeAvailabilityRecord(
            "gpu_spot_g6", False, NOW, UnavailableNodeInformation("InsufficientInstanceCapacity", "no g6 capacity"))}))
    report = json.loads(json.dumps({"autoscaler_report": asdict(summary), "time": NOW}))   # as the KV holds it
    assert waiting.from_v1_report(report) == {
        "active": {"gpu_spot_g5": 2}, "launching": {"gpu_spot_g5": 1, "gpu_ondemand": 2},
        "failed": {"gpu_spot_g6": (1, "InsufficientInstanceCapacity: no g6 capacity")}}
    assert waiting.from_v1_report(None) is None and waiting.from_v1_report({}) is None


def test_clusters_for_pack_sizes_are_the_nodes_now_plus_the_file_or_the_gcs_config(monkeypatch):
    monkeypatch.setattr(capacity, "nodes_resources", lambda: [{"CPU": 0.0, "GPU": 0.0}])
    monkeypatch.delenv(shapes.ENV_CLUSTER, raising=False)
    monkeypatch.setattr(capacity, "_gcs_cluster_config", lambda: None)
    (now,) = capacity.clusters()
    assert shapes.capacity(PAPER, now).slots == 0
    monkeypatch.setenv(shapes.ENV_CLUSTER, str(ROOT / "cluster.yaml"))
    now, file = capacity.clusters()
    assert shapes.capacity(PAPER, file).slots == 80


def test_the_gcs_cluster_config_is_read_when_a_platform_records_it(monkeypatch):
    from ray._private.state import state
    from ray.core.generated import autoscaler_pb2
    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add(name="gpu", max_count=5)
    group.resources["CPU"], group.resources["GPU"] = 16, 1
    config.node_group_configs.add(name="any", max_count=-1).resources["CPU"] = 8
    monkeypatch.setattr(state, "get_cluster_config", lambda: config)
    cluster = capacity._gcs_cluster_config()
    assert [(t.name, t.cpu, t.gpu, t.max_nodes) for t in cluster.node_types] == [
        ("gpu", 16, 1, 5), ("any", 8, 0, capacity.UNLIMITED_NODES)]
    assert shapes.capacity(PAPER, cluster).slots == 20
    monkeypatch.setattr(state, "get_cluster_config", lambda: None)   # Ray 2.60's own autoscalers
    assert capacity._gcs_cluster_config() is None


@pytest.mark.parametrize("args, message", [
    (["--cluster", "cluster.yaml"], "error: --cluster needs --address"),
    (["--address", "127.0.0.1:1", "--cluster", "nope.yaml"], "error: cluster file nope.yaml: no such file"),
])
def test_run_with_a_bad_cluster_option_stops_in_one_line_before_anything_runs(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = cli.main(["run", "paper-mnist", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1
