"""Which failures of a stage's trials are retried, and how often.

Tune counts every failure of a trial against one `max_failures`: a spot node taken away, a worker
killed for memory and a method that raises all look alike to it, so a trial preempted three times
failed for good while a method with a bug ran three times. Here Tune retries without limit
(max_failures=-1) and `Retries` decides, from Ray's error types and from the state of the node the
attempt ran on (run_pack reports its node before it does any work; when the error is only that the
worker stopped answering, the node's fate is waited for: settled_node_alive):

  failure                                   recognised by                                   retries
  node lost (spot preemption, a node that   ActorDiedError.preempted, NodeDiedError, an     no limit
    died or was removed)                    error naming a dead node, or the attempt's
                                            node no longer alive in Ray's node table
  out of memory on a live node              OutOfMemoryError, or a worker death whose       OUT_OF_MEMORY_RETRIES
    (Ray's memory monitor)                  message says out of memory
  worker killed on a live node (SIGKILL,    any other death of the trial's worker           WORKER_RETRIES
    the kernel's OOM killer, a crash)
  an exception raised by the trial (a       RayTaskError: the trainable raised it           EXCEPTION_RETRIES
    method's error is deterministic)

A retry cannot be refused from a Tune callback (Tune has scheduled it before callbacks hear of the
failure), so the attempt past a limit is stopped at its first report, before it loads anything, and
its trials are named in the stage's summary with the reason. Retried trials resume from their
checkpoints by key (trainables/checkpoints.py).
"""
import time

import cloudpickle
import ray
from ray import exceptions as ray_errors
from ray import tune

from grid.execution import worker_logs
from grid.execution.faults import error_line

NODE_LOST, OUT_OF_MEMORY, WORKER_LOST, EXCEPTION = "node lost", "out of memory", "worker lost", "exception"
OUT_OF_MEMORY_RETRIES = 2   # memory use may depend on what shares the node: worth two more tries, not more
WORKER_RETRIES = 2
EXCEPTION_RETRIES = 1       # a method's error comes back the same way; one retry covers a transient one
NODE_DEATH_WAIT_S = 40      # > Ray's default time to declare a silent node dead (~15 s) with room to spare
LIMITS = {NODE_LOST: None, OUT_OF_MEMORY: OUT_OF_MEMORY_RETRIES, WORKER_LOST: WORKER_RETRIES,
          EXCEPTION: EXCEPTION_RETRIES}


def classify(error, node_alive=None):
    """NODE_LOST, OUT_OF_MEMORY, WORKER_LOST or EXCEPTION for the error Tune got from a trial's attempt.
    node_alive: whether the node the attempt ran on is alive now (None: not known)."""
    if isinstance(error, ray_errors.RayTaskError):
        cause = error.as_instanceof_cause()
        if not isinstance(cause, (ray_errors.RayActorError, ray_errors.WorkerCrashedError,
                                  ray_errors.NodeDiedError, ray_errors.OutOfMemoryError)):
            return EXCEPTION
        error = cause
    text = str(error).lower()
    if (getattr(error, "preempted", False) or isinstance(error, ray_errors.NodeDiedError) or node_alive is False
            or "node has died" in text or "node died" in text):
        return NODE_LOST
    if isinstance(error, ray_errors.OutOfMemoryError) or "out of memory" in text or "out_of_memory" in text:
        return OUT_OF_MEMORY
    if isinstance(error, (ray_errors.RayActorError, ray_errors.WorkerCrashedError)):
        return WORKER_LOST
    return EXCEPTION


def node_alive(node_id):
    """Whether Ray's node table has `node_id` alive (None: no node id, or the table cannot be read)."""
    if not node_id:
        return None
    try:
        for node in ray.nodes():
            if node["NodeID"] == node_id:
                return bool(node["Alive"])
    except Exception:   # the table is only a hint; the error's own type decides then
        return None
    return False


def settled_node_alive(node_id, wait_s):
    """node_alive, once Ray's node table has caught up: a node whose raylet died is declared dead by the
    head's health checks only after some seconds (by default 5 missed checks, 3 s apart), while the
    trial's error (ActorUnavailableError: the connection to its worker closed) comes at once. Waits up
    to wait_s while the node still counts as alive; blocks the Tune loop only for such an error."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = node_alive(node_id)
        if alive is not True or time.monotonic() >= deadline:
            return alive
        time.sleep(0.5)


def _latest_error(trial):
    """The exception of the trial's latest failure, as Tune saved it before the retry (local files)."""
    try:
        if trial.pickled_error_file:
            with open(trial.pickled_error_file, "rb") as f:
                return cloudpickle.load(f)
    except Exception:
        pass
    try:
        with open(trial.error_file) as f:
            return RuntimeError(f.read().strip().split("Failure #")[-1])
    except Exception:
        return RuntimeError("unknown error")


class Retries(tune.Callback, tune.Stopper):
    """The retry policy of one stage's Tuner (module docstring). `names(trial)`: the run names of a
    Tune trial's pack, for the summary. `given_up`: {trial_id: summary line} after fit."""

    def __init__(self, names, echo):
        self.names, self.echo = names, echo
        self.nodes, self.workers, self.counts, self.given_up = {}, {}, {}, {}

    def __getstate__(self):   # Tune pickles callbacks into its experiment state: echo and names are not state
        return {"nodes": self.nodes, "workers": self.workers, "counts": self.counts, "given_up": self.given_up}

    def __setstate__(self, state):
        self.__dict__.update({"workers": {}, **state}, echo=print, names=lambda trial: [])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "attempt_node" in result:
            self.nodes[trial.trial_id] = result["attempt_node"]
            self.workers[trial.trial_id] = result.get("attempt_worker", "")

    def on_trial_recover(self, iteration, trials, trial, **info):
        error = _latest_error(trial)
        node = self.nodes.get(trial.trial_id)
        unavailable = ray_errors.ActorUnavailableError
        if isinstance(error, unavailable) or isinstance(getattr(error, "cause", None), unavailable):
            alive = settled_node_alive(node, NODE_DEATH_WAIT_S)   # a dead node or a dead worker: not told apart yet
        else:
            alive = node_alive(node)
        kind = classify(error, alive)
        counts = self.counts.setdefault(trial.trial_id, {})
        counts[kind] = counts.get(kind, 0) + 1
        limit = LIMITS[kind]
        names = self.names(trial) or [f"trial {trial.trial_id}"]
        who = names[0] + (f" (and {len(names) - 1} more of its pack)" if len(names) > 1 else "")
        # a lost node or worker raised nothing in the trial: what it printed last is what the driver kept
        output = self._output(trial.trial_id) if kind != EXCEPTION else []
        if limit is not None and counts[kind] > limit:
            self.given_up[trial.trial_id] = "\n".join([self._line(kind, counts[kind], error, names)]
                                                       + [f"  {line}" for line in output])
            self.echo(f"  FAILED {who}: {kind} {counts[kind]} times, not retried again")
        else:
            self.echo(f"  retrying {who}: {kind} ({error_line(error)})")
        for line in output:
            self.echo(f"    {line}")

    def _output(self, trial_id):
        """worker_logs' lines for the worker of the trial's latest attempt."""
        ip, _, pid = self.workers.get(trial_id, "").partition(" ")
        return worker_logs.describe(ip, int(pid)) if pid.isdigit() else []

    @staticmethod
    def _line(kind, count, error, names):
        why = {OUT_OF_MEMORY: f"its worker was killed for memory {count} times on a live node",
               WORKER_LOST: f"its worker died {count} times on a live node",
               EXCEPTION: f"it raised {count} times"}[kind]
        cause = getattr(error, "cause", None)
        if kind == EXCEPTION and cause is not None and type(cause).__name__ == "PackFailed":
            return "\n".join(f"{line} ({why})" for line in str(cause).strip().splitlines())
        return "\n".join(f"{name}: {error_line(error)} ({why})" for name in names)

    def __call__(self, trial_id, result):
        # the attempt past a limit, at its first report: stopped before it does any work
        return trial_id in self.given_up and "attempt_node" in result

    def stop_all(self):
        return False
