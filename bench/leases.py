"""What a lease claim costs on a slow bucket: one driver claims N keys on moto's S3 server behind a proxy
adding L ms to each request, with the claim leases.py made before conditional writes (one key at a time:
read, write, SETTLE_S, read back; tests/test_leases_on_a_bucket.py keeps it) and with today's (conditional
writes, CONCURRENCY keys at a time), in one process.

    .venv/bin/python bench/leases.py [--keys N] [--latency-ms L]   # ~3.5 min here at the defaults

Prints each claim's wall time (median of --repeats, each on fresh keys) and their ratio. moto answers a
request in ~10 ms of its own CPU on a busy 2-core machine, which both sides pay; a real bucket in the
same region answers in ~10-30 ms without that cost.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from grid.execution import leases  # noqa: E402
from services import s3_bucket  # noqa: E402
from test_leases_on_a_bucket import claim_one_at_a_time, latency_proxy  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    leases.SETTLE_S = 0.1   # the old claim's wait, small: what is measured is the round trips
    times = {"one at a time (before)": [], "conditional, concurrent": []}
    with s3_bucket() as (uri, _):
        moto_port = int(uri("x").split("endpoint_override=")[1].split("&")[0].rsplit(":", 1)[1])
        with latency_proxy(moto_port, args.latency_ms / 1000) as port:
            for repeat in range(args.repeats):
                for name, claim in [("one at a time (before)", claim_one_at_a_time),
                                    ("conditional, concurrent", leases.Leases.claim)]:
                    storage = (f"s3://testing:testing@grid/{repeat}-{len(times[name])}?endpoint_override="
                               f"127.0.0.1:{port}&scheme=http&region=us-east-1")
                    keys = [f"{i:016x}" for i in range(args.keys)]
                    with leases.Leases(storage, driver="bench:1") as claims:
                        started = time.perf_counter()
                        mine, _ = claim(claims, keys)
                        times[name].append(time.perf_counter() - started)
                        assert len(mine) == args.keys
                        claims.held.clear()   # not released: the next repeat uses fresh keys
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"claim of {args.keys} keys at +{args.latency_ms:g} ms a request, median of {args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {name:26s} {seconds:7.2f} s   (runs: {', '.join(f'{v:.2f}' for v in times[name])})")
    print(f"  ratio before/now: {medians['one at a time (before)'] / medians['conditional, concurrent']:.1f}x")


if __name__ == "__main__":
    main()
