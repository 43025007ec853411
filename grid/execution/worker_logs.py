"""The trials' own output (their workers' stdout and stderr), kept by the driver: in a file, and the last
lines of each worker in memory for the retry lines of `run`.

A trial's output is written on its node (Ray's worker-*.out/err under /tmp/ray), and a node that is
taken away (a spot preemption) takes those files with it: what the trial printed last, a traceback
of a thread, a warning before an out-of-memory kill, is then nowhere. Tune writes error.txt only for
an exception the trial itself raised; a vanished node raises nothing in the trial, so all the driver
learns is "node died". Ray streams every worker's lines to the driver as they are written
(`log_to_driver=True`, Ray's log monitor on each node), and that stream is the one copy that outlives
the node. `run` used to turn it off (`log_to_driver=False`) so that its terminal shows one line per
trial rather than every worker's output; here the stream stays on and goes to a file instead of the
terminal: Ray's handler that prints it is replaced by WorkerLogs (Ray 2.60's
`global_worker_stdstream_dispatcher`, which is what `ray.init(log_to_driver=True)` sets up).

    unlearn-grid/logs/workers-HOST-PID.log      # beside the default store; one per driver
    (10.0.3.7 pid=4711) epoch 3/20 …

A retried trial's line names its worker and shows its last lines (grid/execution/retries.py). Lines a
node wrote in its last instant, before its log monitor sent them, are lost with it (Ray's monitor
reads the files continuously; a preempted node usually has its two-minute notice).
"""
import collections
import threading
from pathlib import Path

from grid.tracking import location

RAY_HANDLER = "ray_print_logs"       # Ray's own handler: prints workers' lines on the driver's terminal
HANDLER = "unlearn_grid_worker_logs"
KEEP_LINES = 20                      # per worker, for the retry lines
SHOWN_LINES = 5                      # of those, shown under a retried trial's line

_current = None


class WorkerLogs:
    """A handler of Ray's worker-output stream: every line to `path` (prefixed with its worker), the
    last KEEP_LINES of each worker (node IP, pid) in memory."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)   # line-buffered: a driver killed later keeps what it had
        self._last = collections.defaultdict(lambda: collections.deque(maxlen=KEEP_LINES))
        self._lock = threading.Lock()

    def __call__(self, data):
        if data.get("pid") == "autoscaler":   # the head's autoscaler status, every few seconds: no trial's output
            return
        who = f"({data.get('ip')} pid={data.get('pid')})"
        lines = [line.rstrip("\n") for line in data.get("lines") or []]
        with self._lock:
            self._last[(str(data.get("ip")), str(data.get("pid")))].extend(lines)
            self._file.writelines(f"{who} {line}\n" for line in lines)

    def last_lines(self, ip, pid, count=SHOWN_LINES):
        """The last `count` lines that worker (node IP, pid) wrote; [] when none reached the driver."""
        with self._lock:
            return list(self._last.get((str(ip), str(pid)), ()))[-count:]

    def close(self):
        with self._lock:
            self._file.close()


def default_path(driver):
    return location.DEFAULT_ROOT.resolve() / "logs" / f"workers-{driver.replace(':', '-')}.log"


def capture(path):
    """Send Ray's worker-output stream (ray.init(log_to_driver=True) has started it) to a WorkerLogs at
    `path` instead of the terminal; returns it. Called after every ray.init of the driver."""
    global _current
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    dispatcher.remove_handler(RAY_HANDLER)
    dispatcher.remove_handler(HANDLER)
    if _current is None or _current.path != Path(path):
        _current = WorkerLogs(path)
    dispatcher.add_handler(HANDLER, _current)
    return _current


def current():
    """The WorkerLogs of this driver (None before capture)."""
    return _current


def describe(ip, pid):
    """Lines for a retried or failed trial: the last lines its worker wrote and where the rest is; []
    when this driver has no output of it."""
    logs = current()
    if logs is None or not ip or pid is None:
        return []
    last = logs.last_lines(ip, pid)
    where = f"its worker ({ip} pid={pid}): full output in {logs.path}"
    if not last:
        return [f"{where} (no line reached the driver)"]
    return [f"{where}; its last lines:"] + [f"  | {line}" for line in last]
