"""The driver keeps its workers' output (grid/execution/worker_logs.py): on a local Ray started as `run`
starts it (grid/execution/connect.py), a worker prints and is then SIGKILLed, as a node taken away takes
its worker; what it printed is in the driver's file and its last lines in memory, and none of it is on
the driver's terminal (one line per trial stays the rule there). ~15 s on 2 cores."""
import os
import signal

import pytest
import ray

from grid.execution import connect, worker_logs
from services import wait_for

pytestmark = pytest.mark.system


@ray.remote(num_cpus=0)
class Chatty:
    def where(self):
        return ray.util.get_node_ip_address(), os.getpid()

    def talk_then_die(self):
        for epoch in range(1, 4):
            print(f"epoch {epoch}/3 of a trial whose node goes away", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_workers_output_reaches_the_driver_file_not_its_terminal(tmp_path, monkeypatch, capfd):
    if ray.is_initialized():
        pytest.skip("needs a Ray of its own (a session Ray of the tests is running)")
    monkeypatch.chdir(tmp_path)              # the default log folder: ./unlearn-grid/logs
    connect.init()
    try:
        actor = Chatty.remote()
        ip, pid = ray.get(actor.where.remote())
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.talk_then_die.remote())
        logs = worker_logs.current()
        wait_for(lambda: len(logs.last_lines(ip, pid)) == 3, 60, "the worker's lines at the driver")
        assert logs.last_lines(ip, pid)[-1] == "epoch 3/3 of a trial whose node goes away"
        assert logs.path.parent == tmp_path / "unlearn-grid" / "logs"
        assert f"({ip} pid={pid}) epoch 1/3 of a trial whose node goes away" in logs.path.read_text()
        assert worker_logs.describe(ip, pid)[0].startswith(f"its worker ({ip} pid={pid}): full output in {logs.path}")
    finally:
        ray.shutdown()
    terminal = capfd.readouterr()
    assert "epoch" not in terminal.out + terminal.err
