"""Wall time of a command in a fresh process, and the median table the start-up benches print
(bench/cli_time.py, bench/import_time.py). Imported by those scripts as their sibling module."""
import statistics
import subprocess
import time


def seconds(command, cwd=None, expect=0):
    """Start to exit of `command`; stops the bench when it exits with another code than `expect`."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}, expected {expect}:\n{result.stderr}")
    return elapsed


def median_seconds(command, repeat, cwd=None, expect=0):
    return statistics.median(seconds(command, cwd, expect) for _ in range(repeat))


def print_table(rows, baseline, baseline_name):
    """rows [(case, median seconds)], each with its ratio to `baseline` seconds."""
    header = f"× {baseline_name}"
    print(f"{'case':40s} {'median s':>9s} {header:>19s}")
    for name, value in rows:
        print(f"{name:40s} {value:9.2f} {value / baseline:19.2f}")
