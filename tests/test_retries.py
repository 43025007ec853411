"""The retry policy of a stage (grid/execution/retries.py): how Ray's errors are classified, and when the
stage stops retrying a trial. The errors are Ray's own exception types, built as Ray builds them."""
import cloudpickle
import pytest
from ray import exceptions as ray_errors

from grid.execution import retries
from trainables.trial import PackFailed


def task_error(cause):
    """What Tune gets when the trainable raises `cause`."""
    return ray_errors.RayTaskError("run_pack", "Traceback ...", cause)


@pytest.mark.parametrize("error, node_alive, kind", [
    (ray_errors.RayActorError(error_msg="spot node drained", preempted=True), True, retries.NODE_LOST),
    (ray_errors.NodeDiedError("node gone"), None, retries.NODE_LOST),
    (ray_errors.ActorDiedError(), False, retries.NODE_LOST),                 # its node is dead in Ray's table
    (ray_errors.RayActorError(error_msg="The actor died because its node has died. Node Id: ab12"), None,
     retries.NODE_LOST),
    (ray_errors.OutOfMemoryError("Task was killed due to the node running low on memory."), True,
     retries.OUT_OF_MEMORY),
    (ray_errors.RayActorError(error_msg="worker exit type: NODE_OUT_OF_MEMORY"), True, retries.OUT_OF_MEMORY),
    (ray_errors.ActorDiedError(), True, retries.WORKER_LOST),                # SIGKILL, a crash: the node lives
    (ray_errors.WorkerCrashedError(), None, retries.WORKER_LOST),
    (task_error(PackFailed("unlearn/ft/...: ValueError: bad")), True, retries.EXCEPTION),
    (task_error(ZeroDivisionError("x")), None, retries.EXCEPTION),
    (task_error(ray_errors.ActorDiedError()), False, retries.NODE_LOST),     # a task error wrapping a death
])
def test_failures_are_classified_by_error_type_and_node_state(error, node_alive, kind):
    assert retries.classify(error, node_alive) == kind


class FakeTrial:
    """The parts of Tune's Trial that Retries reads: its id, its pack's config and its latest error,
    pickled as Tune pickles it before a retry."""

    def __init__(self, folder, trial_id="t1"):
        self.trial_id, self.config = trial_id, {"pack": 0}
        self.pickled_error_file, self.error_file = str(folder / "error.pkl"), str(folder / "error.txt")

    def fails_with(self, error):
        with open(self.pickled_error_file, "wb") as f:
            cloudpickle.dump(error, f)
        return self


def run_failures(tmp_path, monkeypatch, errors, node_alive=True):
    """Feed `errors` as one trial's successive failures; returns (Retries, echoed lines)."""
    monkeypatch.setattr(retries, "node_alive", lambda node_id: node_alive)
    lines = []
    policy = retries.Retries(lambda trial: ["unlearn/ft/digits/small_cnn/f8/s0u0", "unlearn/rl/digits/small_cnn/f8/s0u0"],
                             lines.append)
    trial = FakeTrial(tmp_path)
    for error in errors:
        policy.on_trial_result(0, [], trial, {"attempt_node": "node-a"})
        assert not policy(trial.trial_id, {"attempt_node": "node-a"})   # this attempt was allowed to run
        policy.on_trial_recover(0, [], trial.fails_with(error))
    return policy, lines


def test_a_lost_node_is_retried_without_limit(tmp_path, monkeypatch):
    policy, lines = run_failures(tmp_path, monkeypatch, [ray_errors.ActorDiedError()] * 10, node_alive=False)
    assert policy.given_up == {}
    assert not policy("t1", {"attempt_node": "node-b"})
    assert all("node lost" in line for line in lines) and len(lines) == 10


def test_a_method_error_is_retried_once_then_its_next_attempt_is_stopped_before_it_runs(tmp_path, monkeypatch):
    error = task_error(PackFailed("unlearn/ft/digits/small_cnn/f8/s0u0: ValueError: bad"))
    policy, _ = run_failures(tmp_path, monkeypatch, [error])
    assert policy.given_up == {}                        # the first failure: retried
    policy.on_trial_recover(0, [], FakeTrial(tmp_path).fails_with(error))
    assert policy.given_up == {"t1": "unlearn/ft/digits/small_cnn/f8/s0u0: ValueError: bad (it raised 2 times)"}
    assert policy("t1", {"attempt_node": "node-a"})     # the third attempt stops at its first report
    assert not policy("t1", {"finished": True})         # only there: nothing else of a trial is stopped


def test_workers_killed_on_a_live_node_have_a_small_cap_named_in_the_summary(tmp_path, monkeypatch):
    deaths = [ray_errors.OutOfMemoryError("killed: node running low on memory; out of memory")]
    policy, _ = run_failures(tmp_path, monkeypatch, deaths * (retries.OUT_OF_MEMORY_RETRIES + 1))
    (line,) = policy.given_up.values()
    assert line.splitlines()[0].startswith("unlearn/ft/digits/small_cnn/f8/s0u0: OutOfMemoryError")
    assert f"killed for memory {retries.OUT_OF_MEMORY_RETRIES + 1} times on a live node" in line
    assert len(line.splitlines()) == 2                  # every trial of the pack is named


def test_kinds_are_counted_apart(tmp_path, monkeypatch):
    """A trial preempted many times and killed once on a live node is still retried."""
    errors = [ray_errors.RayActorError(error_msg="drained", preempted=True)] * 5 + [ray_errors.ActorDiedError()]
    policy, _ = run_failures(tmp_path, monkeypatch, errors)
    assert policy.given_up == {} and policy.counts["t1"] == {retries.NODE_LOST: 5, retries.WORKER_LOST: 1}


def test_a_worker_that_stops_answering_is_a_lost_node_once_ray_declares_its_node_dead(tmp_path, monkeypatch):
    """The connection to a node's worker closes at once; Ray's head declares the node dead seconds later.
    The policy waits for the node table instead of calling it a worker killed on a live node."""
    states = iter([True, True, True, False])
    monkeypatch.setattr(retries, "node_alive", lambda node_id: next(states))
    monkeypatch.setattr(retries.time, "sleep", lambda seconds: None)
    policy = retries.Retries(lambda trial: ["original/mnist/small_cnn/s0"], lambda line: None)
    trial = FakeTrial(tmp_path)
    policy.on_trial_result(0, [], trial, {"attempt_node": "node-a"})
    policy.on_trial_recover(0, [], trial.fails_with(ray_errors.ActorUnavailableError("Socket closed", None)))
    assert policy.counts["t1"] == {retries.NODE_LOST: 1}


def test_a_worker_that_stops_answering_on_a_node_that_stays_alive_is_a_lost_worker(monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(retries, "node_alive", lambda node_id: True)
    monkeypatch.setattr(retries.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(retries.time, "sleep", lambda seconds: None)
    assert retries.settled_node_alive("node-a", wait_s=30) is True
    assert retries.classify(ray_errors.ActorUnavailableError("Socket closed", None), True) == retries.WORKER_LOST


def test_a_lost_nodes_trial_shows_the_last_lines_its_worker_wrote(tmp_path, monkeypatch):
    """A node taken away raises nothing in the trial: its retry line names the worker, shows what the
    driver received of its output last (grid/execution/worker_logs.py) and where the rest is."""
    from grid.execution import worker_logs
    logs = worker_logs.WorkerLogs(tmp_path / "workers.log")
    monkeypatch.setattr(worker_logs, "_current", logs)
    logs({"ip": "10.0.3.7", "pid": 4711, "is_err": True,
          "lines": [f"epoch {i}/20" for i in range(1, 9)] + ["Traceback (most recent call last):", "  boom"]})
    logs({"ip": "10.0.3.8", "pid": 4711, "is_err": False, "lines": ["another node's worker"]})
    monkeypatch.setattr(retries, "node_alive", lambda node_id: False)
    lines = []
    policy = retries.Retries(lambda trial: ["original/mnist/small_cnn/s0"], lines.append)
    trial = FakeTrial(tmp_path)
    policy.on_trial_result(0, [], trial, {"attempt_node": "node-a", "attempt_worker": "10.0.3.7 4711"})
    policy.on_trial_recover(0, [], trial.fails_with(ray_errors.ActorDiedError()))
    assert lines[0].startswith("  retrying original/mnist/small_cnn/s0: node lost")
    assert lines[1] == f"    its worker (10.0.3.7 pid=4711): full output in {tmp_path / 'workers.log'}; its last lines:"
    assert lines[2:] == [f"      | {line}" for line in ["epoch 6/20", "epoch 7/20", "epoch 8/20",
                                                       "Traceback (most recent call last):", "  boom"]]
    logs.close()
    written = (tmp_path / "workers.log").read_text().splitlines()
    assert written[0] == "(10.0.3.7 pid=4711) epoch 1/20" and written[-1] == "(10.0.3.8 pid=4711) another node's worker"
