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
import sys

from timing import median_seconds, print_table, seconds   # bench/timing.py (run as a script: its folder is on sys.path)

CASES = {
    "python -c pass (baseline)": "pass",
    "import trainables.trial": "import trainables.trial",
    "import trainables.trial, torchvision": "import trainables.trial, torchvision",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    seconds([sys.executable, "-c", "import trainables.trial, torchvision"])   # warm the file cache, compile the .pyc files
    rows = [(name, median_seconds([sys.executable, "-c", code], args.repeat)) for name, code in CASES.items()]
    print_table(rows, rows[1][1], "trainables.trial")


if __name__ == "__main__":
    main()
