"""The test's side of the gates plugin (tests/plugins/gates.py, which says what a gate is): write the gates,
wait until trials are known to be at one, let them go. A test hands `env` to the processes it starts
(conftest's `gates` fixture also sets it in the test's own process), and the driver passes it on to every
trial's worker (trainables/plugins.py)."""
import json
import os
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "plugins" / "gates.py"


class Gates:
    def __init__(self, folder, **gates):
        """gates: NAME={"stage": ..., "epoch": ..., "pass_first": ..., "parties": ...} (see the plugin)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "gates.json").write_text(json.dumps(gates))
        self.names = sorted(gates)
        self.env = {"UNLEARN_GRID_PLUGINS": str(PLUGIN), "UNLEARN_GRID_TEST_GATES": str(self.folder)}

    def arrivals(self, name):
        """What each trial that reached gate `name` wrote, in arrival order."""
        gate = self.folder / name
        if not gate.is_dir():
            return []
        numbers = sorted(int(p.name.split(".")[1]) for p in gate.glob("arrived.*"))
        return [json.loads((gate / f"arrived.{n}").read_text()) for n in numbers]

    def wait(self, name, count=1, timeout=300, process=None, also=lambda: True):
        """Block until `count` trials reached gate `name` (and `also()` holds); returns their arrivals.
        A `process` (the driver) that exits first fails at once, naming the gate."""
        deadline = time.monotonic() + timeout
        while True:
            arrived = self.arrivals(name)
            if len(arrived) >= count and also():
                return arrived
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the process exited ({process.returncode}) before {count} trial(s) reached "
                                     f"gate {name!r} ({len(arrived)} did)")
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(arrived)} of {count} trial(s) reached gate {name!r} within {timeout} s")
            time.sleep(0.1)

    def release(self, *names):
        for name in names or self.names:
            (self.folder / name).mkdir(exist_ok=True)
            (self.folder / name / "release").touch()

    def released(self, name):
        return os.path.exists(self.folder / name / "release")
