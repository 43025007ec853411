"""How soon `unlearn-grid` gives up on what cannot work, from start to exit of the command (the tests
check that each fails with one clear line, not how fast): against `unlearn-grid validate demo` in the
same run, which is the command's own start-up (imports, a grid, no Ray, no server).

    .venv/bin/python bench/fail_fast.py          # ~1 min on 2 cores; prints a table

Cases: a tracking server that does not answer, a Ray address where nothing listens, a PostgreSQL that
does not answer (`unlearn-grid server`), a grid asking for a GPU on a machine without one (local Ray
starts, then `run` stops), malformed grid files (an alias bomb, deep nesting; tests/test_malformed_grids.py
checks their errors). Everything on 127.0.0.1, in a temporary folder.
"""
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CLI = str(Path(sys.executable).parent / "unlearn-grid")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(arguments, folder):
    """(seconds, exit code, last line of stderr) of `unlearn-grid ARGUMENTS` run in `folder`."""
    started = time.perf_counter()
    done = subprocess.run([CLI, *arguments], cwd=folder, capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    return time.perf_counter() - started, done.returncode, lines[-1] if lines else ""


def main():
    folder = Path(tempfile.mkdtemp(prefix="fail-fast-"))
    store = ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--storage", str(folder / "storage")]
    gpu_grid = folder / "gpu.yaml"
    gpu_grid.write_text(yaml.safe_dump({"name": "no-gpu", "datasets": "toy2d", "archs": "mlp", "forget_classes": [0],
                                        "seeds": [0], "methods": {"ft": {}}, "resources": {"cpu": 1, "gpu": 1}}))
    bomb = folder / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(    # 9^9 values once expanded
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)))
    nested = folder / "nested.yaml"
    nested.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    cases = {
        "start-up: validate demo (baseline)": ["validate", "demo"],
        "tracking server not answering": ["run", "demo", "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                                          "--storage", str(folder / "storage")],
        "Ray address not answering": ["run", "demo", "--address", f"127.0.0.1:{free_port()}", *store],
        "PostgreSQL not answering (server)": ["server", "--backend-store-uri",
                                              f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow",
                                              "--artifacts-destination", str(folder / "artifacts")],
        "GPU grid, no GPU (local Ray)": ["run", str(gpu_grid), *store],
        "malformed grid: an alias bomb": ["run", str(bomb), *store],
        "malformed grid: deep nesting": ["run", str(nested), *store],
    }
    rows = [(name, *timed(arguments, folder)) for name, arguments in cases.items()]
    baseline = rows[0][1]
    print(f"{'case':38s} {'seconds':>8s} {'× start-up':>10s} exit  last line")
    for name, seconds, code, line in rows:
        print(f"{name:38s} {seconds:8.1f} {seconds / baseline:10.2f} {code:4d}  {line[:90]}")


if __name__ == "__main__":
    main()
