"""The driver keeps its workers' output (grid/execution/worker_logs.py): on a local Ray started as `run`
starts it (grid/execution/connect.py), a worker prints and is then SIGKILLed, as a node taken away takes
its worker; what it printed is in the driver's file and its last lines in memory, and none of it is on
the driver's terminal (one line per trial stays the rule there). The driver is a child process with a
Ray of its own, whatever Ray the test session holds. ~20 s on 2 cores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r'''
import json, os, signal, sys
import ray
from grid.execution import connect, worker_logs

@ray.remote(num_cpus=0)
class Chatty:
    def where(self):
        return ray.util.get_node_ip_address(), os.getpid()

    def talk_then_die(self):
        for epoch in range(1, 4):
            print(f"epoch {epoch}/3 of a trial whose node goes away", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

connect.init()
try:
    actor = Chatty.remote()
    ip, pid = ray.get(actor.where.remote())
    try:
        ray.get(actor.talk_then_die.remote())
        died = False
    except ray.exceptions.RayActorError:
        died = True
    logs = worker_logs.current()
    for _ in range(300):                     # the lines reach the driver shortly after the worker wrote them
        if len(logs.last_lines(ip, pid)) == 3:
            break
        import time; time.sleep(0.2)
    result = {"died": died, "ip": ip, "pid": pid, "last": logs.last_lines(ip, pid), "path": str(logs.path),
              "file": logs.path.read_text(), "describe": worker_logs.describe(ip, pid)}
finally:
    ray.shutdown()
with open(sys.argv[1], "w") as out:
    json.dump(result, out)
'''


def test_a_killed_workers_output_reaches_the_driver_file_not_its_terminal(tmp_path):
    script, answer = tmp_path / "driver.py", tmp_path / "answer.json"
    script.write_text(DRIVER)
    # cwd: the default log folder is ./unlearn-grid/logs
    done = subprocess.run([sys.executable, str(script), str(answer)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(answer.read_text())
    ip, pid = result["ip"], result["pid"]
    assert result["died"]
    assert result["last"] == [f"epoch {epoch}/3 of a trial whose node goes away" for epoch in (1, 2, 3)]
    assert Path(result["path"]).parent == tmp_path / "unlearn-grid" / "logs"
    assert f"({ip} pid={pid}) epoch 1/3 of a trial whose node goes away" in result["file"]
    assert result["describe"][0].startswith(f"its worker ({ip} pid={pid}): full output in {result['path']}")
    assert "epoch" not in done.stdout + done.stderr, "the workers' lines stay off the driver's terminal"
