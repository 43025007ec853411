"""How soon `unlearn-grid` answers: start to exit of a command in a fresh process, against `python -c pass`
in the same run (the interpreter's own start-up).

    .venv/bin/python bench/cli_time.py               # ~1 min on 2 cores; prints a table
    .venv/bin/python bench/cli_time.py --repeat 7

Cases: `--help`; `validate` of a malformed grid (rejected: exit 2); `validate demo` with no store (the
grid's trials and cost, nothing cached); `validate demo` with a store (an MLflow SQLite store holding the
demo's experiment: validate then also asks MLflow what is cached, which imports MLflow and opens the
database); and, for comparison, importing torch alone. Targets: --help < 1 s, a malformed grid < 3 s,
validate without a store < 3 s. Each case runs `--repeat` times one after another in a temporary
folder; the table shows the median wall time.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import median_seconds, print_table, seconds   # bench/timing.py (run as a script: its folder is on sys.path)

CLI = [sys.executable, "-m", "grid.cli"]
MALFORMED = "name: bad\ndatasets: [digits\n"          # a YAML error: the first problem any user meets


def make_store(folder):
    """An MLflow SQLite store with the demo's experiment in it, created in a child process."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.set_tracking_uri({uri!r}); "
                    "mlflow.create_experiment('demo')"], check=True, capture_output=True)
    return uri


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bad.yaml").write_text(MALFORMED)
        (folder / "store").mkdir()
        uri = make_store(folder / "store")
        cases = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"], 0),
            ("unlearn-grid --help", CLI + ["--help"], 0),
            ("validate a malformed grid", CLI + ["validate", "bad.yaml"], 2),
            ("validate demo, no store", CLI + ["validate", "demo"], 0),
            ("validate demo, with a store", CLI + ["validate", "demo", "--tracking-uri", uri], 0),
            ("python -c 'import torch' (comparison)", [sys.executable, "-c", "import torch"], 0),
        ]
        for _, command, expect in cases:          # warm the file cache, compile the .pyc files
            seconds(command, folder, expect)
        rows = [(name, median_seconds(command, args.repeat, folder, expect)) for name, command, expect in cases]
    print_table(rows, rows[0][1], "python -c pass")


if __name__ == "__main__":
    main()
