"""What a fresh Python process pays to import the code a trial's Ray worker runs (every worker of every
Tuner imports it before its first trial), against `python -c pass` in the same run.

    .venv/bin/python bench/import_time.py            # ~1 min on 2 cores; prints a table
    .venv/bin/python bench/import_time.py --repeat 5

Cases: the interpreter alone; trainables.trial (what a worker imports for original, Retrain and unlearn
trials); the same plus torchvision, which trainables/models.py imported at module level until
2026-12-04 and now imports only in the builders of the archs that use it. Each case is run `--repeat`
times one after another; the table shows the median wall time.
"""
import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": "pass",
    "import trainables.trial": "import trainables.trial",
    "import trainables.trial, torchvision": "import trainables.trial, torchvision",
}


def seconds(code):
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    seconds("import trainables.trial, torchvision")      # warm the file cache, compile the .pyc files
    rows = [(name, statistics.median(seconds(code) for _ in range(args.repeat))) for name, code in CASES.items()]
    baseline = rows[1][1]
    print(f"{'case':40s} {'median s':>9s} {'× trainables.trial':>19s}")
    for name, value in rows:
        print(f"{name:40s} {value:9.2f} {value / baseline:19.2f}")


if __name__ == "__main__":
    main()
