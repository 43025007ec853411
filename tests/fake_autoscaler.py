"""A Ray cluster with the autoscaler on one machine: Ray's fake multi-node provider (`fake_multinode`).

`FakeCluster(folder).start()` runs `ray start --head` (0 CPUs, like cluster.yaml's head) with an
autoscaling config whose worker type has fake GPUs; the autoscaler (the head's `monitor.py`) then
starts worker "nodes" (a raylet and its agents each, on this machine) when tasks or trials are
pending and removes them when idle, exactly as it adds/removes cloud instances for cluster.yaml.

Everything is scoped to this one cluster, so other Ray instances on the machine are left alone:
- a free GCS port is picked (the provider's `gcs_address` tells launched nodes where to dial; without
  it they dial port 6379);
- authentication is explicit (`RAY_AUTH_MODE=token` + a fresh `RAY_AUTH_TOKEN` in `env`): otherwise
  `ray start` enables token auth only when ~/.ray/auth_token exists (any earlier `ray.init()` writes
  it), so the outcome would depend on the machine's history;
- `stop()` ends only processes whose command line names this cluster's session directory (read from
  the GCS), plus their descendants, and never runs `ray stop`;
- `ray start --head` points /tmp/ray/ray_current_cluster at the cluster; `stop()` restores its old
  content (or removes it) unless someone else has rewritten it since, since a stale one sends later
  `ray.init(address="auto")` calls to a dead cluster.

Run as a script it watches a cluster: `python tests/fake_autoscaler.py watch ADDRESS` prints one
JSON line per second, {"time", "alive", "gpus"} (epoch seconds; alive nodes, head included; their
GPUs), read from the
GCS (no driver, no dashboard), under the environment the cluster was started with.
"""
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from services import free_port

VENV_BIN = Path(sys.executable).parent
RAY_TEMP_DIR = Path("/tmp/ray")   # the default: `ray.init(address="auto")` and ray start expect it
CURRENT_CLUSTER_FILE = RAY_TEMP_DIR / "ray_current_cluster"

HEAD_TYPE = "ray.head.default"   # the provider's fixed name for the head's type
WORKER_TYPE = "ray.worker.gpu"


def autoscaling_config(gcs_address, worker_resources, max_workers, idle_timeout_minutes, upscaling_speed):
    """Every field `ray start --autoscaling-config` needs for the fake provider (Ray's example.yaml,
    which the wheel does not ship)."""
    return {
        "cluster_name": "fake-autoscale",
        "max_workers": max_workers,
        "upscaling_speed": upscaling_speed,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": dict(worker_resources), "node_config": {},
                          "min_workers": 0, "max_workers": max_workers},
        },
        "head_node_type": HEAD_TYPE,
        "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


def _processes():
    """{pid: (ppid, command line)} of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmdline)
    return table


def processes_of(session_dir):
    """Pids whose command line names `session_dir` (a path, followed by / or the end of an argument),
    and all their descendants (some are renamed, e.g. ray::DashboardAgent, and no longer show it)."""
    table = _processes()
    named = re.compile(re.escape(session_dir) + r"(/|\s|$)")
    found = {pid for pid, (_, cmdline) in table.items() if named.search(cmdline)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    found.discard(os.getpid())
    return found


class FakeCluster:
    def __init__(self, folder, worker_resources=None, max_workers=2, idle_timeout_minutes=0.2,
                 upscaling_speed=2.0, autoscaling=True):
        self.folder = Path(folder)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = autoscaling_config(self.address, worker_resources or {"CPU": 4, "GPU": 1}, max_workers,
                                         idle_timeout_minutes, upscaling_speed)
        self.env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.autoscaling = autoscaling   # False: a head started by hand, which never grows
        self.session_dir = None
        self.head_pid = None
        self._started_at = None
        self._current_cluster_before = None
        self._watcher = None

    def start(self, timeout=90):
        config_file = self.folder / "autoscaling.yaml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._current_cluster_before = (CURRENT_CLUSTER_FILE.read_text() if CURRENT_CLUSTER_FILE.exists() else None)
        command = [str(VENV_BIN / "ray"), "start", "--head", "--num-cpus=0", "--num-gpus=0",
                   f"--port={self.port}", "--include-dashboard=false", "--dashboard-agent-listen-port=0",
                   "--disable-usage-stats"] + ([f"--autoscaling-config={config_file}"] if self.autoscaling else [])
        log = open(self.folder / "ray-start.log", "w")
        self._started_at = time.time()
        head = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.head_pid = head.pid
        try:
            rc = head.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            head.kill()
            rc = "timeout"
        finally:
            log.close()
        self.session_dir = self._find_session()
        if rc != 0:
            raise RuntimeError(f"ray start --head failed ({rc}):\n{(self.folder / 'ray-start.log').read_text()[-3000:]}")
        reported = self.gcs_session_dir()
        if reported != self.session_dir:
            raise RuntimeError(f"session directory: GCS says {reported}, expected {self.session_dir}")
        return self

    def _find_session(self):
        """The session directory's name ends in the `ray start` process's pid (start() checks it with the
        GCS); one made before this start is a reused pid's, not ours."""
        sessions = [path for path in RAY_TEMP_DIR.glob(f"session_*_{self.head_pid}")
                    if path.stat().st_mtime >= self._started_at - 1]
        return str(max(sessions)) if sessions else None

    def python(self, code, timeout=60, check=True, **env):
        """Run `code` in a fresh interpreter under the cluster's environment (+ `env`); CompletedProcess."""
        return subprocess.run([sys.executable, "-c", code], env={**self.env, **env}, capture_output=True,
                              text=True, timeout=timeout, check=check)

    def gcs_session_dir(self):
        return self.python(
            "from ray._raylet import GcsClient\n"
            f"nodes = GcsClient(address={self.address!r}).get_all_node_info().values()\n"
            "print([n.session_dir for n in nodes if n.is_head_node][0])").stdout.strip()

    def watch(self, log_path):
        """Start the watcher (see the module docstring); returns its Popen, stdout piped."""
        with open(log_path, "w") as errors:
            self._watcher = subprocess.Popen([sys.executable, __file__, "watch", self.address], env=self.env,
                                             stdout=subprocess.PIPE, stderr=errors, text=True)
        return self._watcher

    def autoscaler_events(self):
        """The autoscaler's event summaries ("Adding 1 node(s) of type ...", "Removing 2 nodes of type ... (idle)")."""
        log = Path(self.session_dir) / "logs" / "monitor.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return [line.split(":event_summary:", 1)[1] for line in lines if ":event_summary:" in line]

    def processes(self):
        return processes_of(self.session_dir) if self.session_dir else set()

    def stop(self, grace=5):
        """End this cluster's processes (SIGTERM, then SIGKILL after `grace` s: the GCS and the autoscaler
        often outlive a SIGTERM by 10 s and more); returns the pids left."""
        if self._watcher is not None and self._watcher.poll() is None:
            self._watcher.kill()
            self._watcher.wait()
        if self.session_dir is None and self.head_pid is not None:
            self.session_dir = self._find_session()   # start() failed before it knew
        left = set()
        if self.session_dir is not None:
            left = self._signal_all(signal.SIGTERM, grace)
            if left:
                left = self._signal_all(signal.SIGKILL, 5)
        self._restore_current_cluster_file()
        return left

    def _signal_all(self, sig, wait):
        deadline = time.monotonic() + wait
        pids = self.processes()
        while pids and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
            pids = self.processes()
        return pids

    def _restore_current_cluster_file(self):
        try:
            current = CURRENT_CLUSTER_FILE.read_text()
        except FileNotFoundError:
            current = None
        if current is None or not current.strip().endswith(f":{self.port}"):
            return   # not ours (any more): someone else's cluster wrote it
        if self._current_cluster_before is None:
            CURRENT_CLUSTER_FILE.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER_FILE.write_text(self._current_cluster_before)


def _watch(address):
    from ray._raylet import GcsClient
    client = GcsClient(address=address)
    while True:
        try:
            alive = [n for n in client.get_all_node_info().values() if n.state == 0]   # 0: ALIVE
            line = {"time": time.time(), "alive": len(alive),
                    "gpus": sum(dict(n.resources_total).get("GPU", 0) for n in alive)}
        except Exception as error:   # a slow GCS under load: report and keep watching
            line = {"time": time.time(), "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(line), flush=True)
        time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["watch"] and len(sys.argv) == 3:
        _watch(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} watch ADDRESS")
