"""Trial shapes against node types (grid/plan/shapes.py) and `unlearn-grid validate --cluster FILE`:
trials per node and per GPU, the cluster's maximum, the partly-idle warning, and the wall-clock the
cost estimate takes from the same numbers. Pure arithmetic and the CLI in-process: ~2 s."""
import re
from pathlib import Path

import pytest
import yaml

from conftest import gpu_paper_grids
from grid import cli
from grid.plan import config, cost, shapes

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"cpu": 4, "gpu": 0.25}


def node(cpu, gpu, max_nodes=1, name="n", head=False):
    return shapes.NodeType(name, cpu, gpu, max_nodes, head=head)


@pytest.mark.parametrize("resources, cpu, gpu, per_node, bound, idle", [
    (PAPER, 16, 1, 4, "GPU", 0.0),            # g5.4xlarge: CPUs and GPU fill together
    (PAPER, 4, 1, 1, "CPU", 0.75),            # g5.xlarge: CPU-bound, three quarters of the GPU idle
    (PAPER, 32, 1, 4, "GPU", 0.0),            # spare CPUs: no GPU idle
    ({"cpu": 2, "gpu": 0.25}, 8, 1, 4, "GPU", 0.0),
    ({"cpu": 4, "gpu": 0.25}, 48, 4, 12, "CPU", 1.0),   # 4 GPUs could hold 16
    ({"cpu": 1, "gpu": 0.3}, 8, 0.9, 3, "GPU", 0.0),    # 0.9 / 0.3 is 2.999… in floats: still 3
    ({"cpu": 4, "gpu": 1}, 2, 1, 0, "CPU", 1.0),        # fits nothing
    ({"cpu": 1, "gpu": 0}, 4, 1, 4, "CPU", 1.0),        # CPU trials on a GPU node: the GPU idles
])
def test_fit_counts_trials_per_node_and_the_gpu_they_leave_idle(resources, cpu, gpu, per_node, bound, idle):
    fit = shapes.fit(resources, node(cpu, gpu))
    assert (fit.per_node, fit.bound) == (per_node, bound)
    assert fit.idle_gpu == pytest.approx(idle)


def test_capacity_takes_the_fullest_types_first_up_to_their_maxima_and_the_global_cap():
    types = (node(0, 0, name="head", head=True), node(4, 1, 8, "small"), node(16, 1, 8, "big"), node(16, 1, 4, "od"))
    cap = shapes.capacity(PAPER, shapes.Cluster("c", types, max_workers=10))
    # big (4 per node) first: 8 nodes, then od: 2 of its 4 under the cap of 10 workers; small gets none
    assert cap.nodes == {"head": 0, "small": 0, "big": 8, "od": 2}
    assert (cap.slots, cap.gpus, cap.trials_per_gpu, cap.capped) == (40, 10, 4, True)
    uncapped = shapes.capacity(PAPER, shapes.Cluster("c", types, max_workers=None))
    assert (uncapped.slots, uncapped.gpus, uncapped.capped) == (8 * 4 + 4 * 4 + 8 * 1, 20, False)
    # a head with resources runs trials too, outside the workers' cap
    with_head = shapes.Cluster("c", (node(16, 1, name="head", head=True),) + types[1:], max_workers=0)
    assert shapes.capacity(PAPER, with_head).slots == 4


def test_the_bundled_cluster_fits_exactly_four_paper_trials_per_gpu_node_and_eighty_at_once():
    cluster = shapes.load(ROOT / "cluster.yaml")
    assert [t.name for t in cluster.node_types][0] == "head" and cluster.node_types[0].head
    cap = shapes.capacity(PAPER, cluster)
    assert (cap.slots, cap.gpus, cap.trials_per_gpu) == (80, 20, 4)
    assert {t.market for t in cluster.workers} == {"spot", "on-demand"}
    assert shapes.warnings(PAPER, cluster) == []


def test_warnings_name_the_partly_idle_gpu_and_a_shape_that_fits_nowhere():
    cluster = shapes.Cluster("old.yaml", (node(0, 0, name="head", head=True), node(4, 1, 8, "gpu_spot")), 8)
    (line,) = shapes.warnings(PAPER, cluster)
    assert line.startswith("gpu_spot: 1 trial(s) per node (CPU-bound") and "0.75 GPU idle" in line
    assert "cpu <= 1" in line and ">= 16 CPUs" in line
    (line,) = shapes.warnings({"cpu": 8, "gpu": 0.25}, cluster)
    assert line.startswith("no node type of old.yaml fits one trial of {cpu: 8, gpu: 0.25}")


def _cluster_file(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


GOOD = {"max_workers": 3, "head_node_type": "head",
        "available_node_types": {"head": {"resources": {"CPU": 0}, "node_config": {}},
                                 "w": {"resources": {"CPU": 8, "GPU": 1}, "node_config": {"InstanceType": "g5.2xlarge"}}}}


def test_a_worker_type_without_max_workers_gets_the_global_one_as_in_ray(tmp_path):
    cluster = shapes.load(_cluster_file(tmp_path, GOOD))
    assert [(t.name, t.max_nodes, t.market) for t in cluster.workers] == [("w", 3, "on-demand")]
    assert shapes.capacity({"cpu": 2, "gpu": 0.25}, cluster).slots == 12


@pytest.mark.parametrize("data, message", [
    (None, "no such file"),
    ("a: [1,\n", "not valid YAML"),
    ("- 1\n", "not a YAML mapping"),
    ({**GOOD, "available_node_types": {}}, "available_node_types missing or empty"),
    ({**GOOD, "head_node_type": "boss"}, "head_node_type 'boss' is not one of available_node_types"),
    ({**GOOD, "available_node_types": {**GOOD["available_node_types"], "w": {"node_config": {}}}},
     "available_node_types.w.resources missing"),
    ({**GOOD, "available_node_types": {**GOOD["available_node_types"],
                                       "w": {"resources": {"CPU": "many"}, "max_workers": 2}}},
     "available_node_types.w.resources.CPU must be a number >= 0, got 'many'"),
    ({**GOOD, "max_workers": 2.5}, "max_workers must be a whole number >= 0, got 2.5"),
    ({k: v for k, v in GOOD.items() if k != "max_workers"}, "available_node_types.w.max_workers missing"),
])
def test_a_bad_cluster_file_is_one_line_naming_the_file_and_field(tmp_path, data, message):
    path = tmp_path / "missing.yaml" if data is None else _cluster_file(tmp_path, data)
    with pytest.raises(shapes.ClusterFileError) as error:
        shapes.load(path)
    assert str(error.value).startswith(f"cluster file {path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def _validate(capsys, *args):
    code = cli.main(["validate", *args, "--tracking-uri", "sqlite:///nowhere/none.db"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("grid", gpu_paper_grids())
def test_validate_prints_trials_per_node_and_gpu_for_each_paper_grid_on_the_bundled_cluster(grid, capsys,
                                                                                          monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = _validate(capsys, grid, "--cluster", str(ROOT / "cluster.yaml"))
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  gpu_")}
    assert set(rows) == {"gpu_spot_g5", "gpu_spot_g6", "gpu_ondemand"}
    assert all(row[-4:-2] == ["4", "4"] for row in rows.values())          # trials per node, per GPU
    assert "at most 80 trials at once (20 worker nodes, 4 per GPU on 20 GPUs)" in out
    assert "warning" not in out
    assert re.search(r"wall-clock of what remains on \S+cluster.yaml at its maximum: 80 trials at once on 20 "
                     r"GPUs, 4 per GPU", out)


def test_validate_warns_about_a_cpu_bound_shape_and_without_a_cluster_states_its_assumption(capsys, monkeypatch,
                                                                                             tmp_path):
    monkeypatch.chdir(tmp_path)
    old = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for name, spec in old["available_node_types"].items():
        if name != old["head_node_type"]:
            spec["resources"] = {"CPU": 4, "GPU": 1}      # the g5.xlarge shape cluster.yaml had before
    path = _cluster_file(tmp_path, old)
    code, out, _ = _validate(capsys, "paper-cifar10", "--cluster", str(path))
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and all("1 trial(s) per node (CPU-bound" in w for w in warnings)
    assert "optimistic where a GPU is partly idle" in out
    code, out, _ = _validate(capsys, "paper-cifar10")
    assert code == 0 and "ASSUMING 4 trials share each GPU" in out and "--cluster FILE" in out


@pytest.mark.parametrize("args, message", [
    (["--cluster", "nope.yaml"], "error: cluster file nope.yaml: no such file"),
    (["--cluster", "cluster.yaml", "--gpus", "4"], "error: --gpus and --cluster both"),
])
def test_validate_with_a_bad_cluster_option_is_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = _validate(capsys, "paper-mnist", *args)
    assert code == 2 and err.strip().startswith(message) and len(err.strip().splitlines()) == 1


def test_the_cost_wall_clock_uses_the_clusters_slots_and_trials_per_gpu():
    plan = config.load("paper-cifar10")
    est = cost.estimate(plan)
    cluster = shapes.load(ROOT / "cluster.yaml")
    wall, sharing = cost.cluster_wall(est, shapes.capacity(plan.grid["resources"], cluster))
    assert sharing == 4 and wall == pytest.approx(est.wall_hours(20, trials_per_gpu=4))
    # 20 GPUs shorten every stage, each bounded below by its longest trial sharing its GPU with three others
    longest = sum(min(s.longest_todo * 4, s.hours_todo) for s in est.stages.values())
    assert max(est.hours / 20, longest) <= wall < est.hours
    # a CPU-bound shape: the same GPUs, one trial each (the model lets a lone trial use its whole GPU)
    cpu_bound = shapes.Cluster("c", tuple(node(4, 1, 20, f"w{i}") for i in range(1)), max_workers=20)
    wall_1, sharing_1 = cost.cluster_wall(est, shapes.capacity(plan.grid["resources"], cpu_bound))
    assert sharing_1 == 1 and wall_1 == pytest.approx(est.wall_hours(20, trials_per_gpu=1))


@pytest.mark.parametrize("grid", gpu_paper_grids())
def test_paper_grid_headers_state_the_wall_clock_on_the_bundled_cluster(grid):
    plan = config.load(grid)
    header = config.resolve(grid).read_text()
    stated = re.search(r"≈ ?([\d.]+) h on cluster\.yaml", header)
    assert stated, f"{grid}: header lacks its wall-clock on cluster.yaml"
    wall, _ = cost.cluster_wall(cost.estimate(plan), shapes.capacity(plan.grid["resources"],
                                                                      shapes.load(ROOT / "cluster.yaml")))
    assert float(stated.group(1)) == pytest.approx(wall, abs=0.06), "header's cluster wall-clock is stale"
