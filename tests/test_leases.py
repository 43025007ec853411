"""Leases (grid/execution/leases.py) claimed by threads standing in for drivers, on a folder store and on an object
store (a file:// URI takes the bucket's code path): each key won exactly once, released keys claimed
again, holders that are gone taken over, heartbeats that keep a live holder's keys its own, and
run_claimed waiting for another driver's keys (~5 s on 2 cores); the s3:// leases' boto3 client and its
conditional writes on moto in-process. Three real drivers at once: tests/test_concurrent_drivers.py; two
drivers on a slow s3:// bucket: tests/test_leases_on_a_bucket.py (both system tier)."""
import collections
import os
import subprocess
import sys
import threading
import time

import pytest

from grid.execution import leases, orphans

HOST = orphans.this_driver().rsplit(":", 1)[0]
KEYS = [f"{i:016x}" for i in range(200)]


def _store(tmp_path, kind):
    return str(tmp_path / "store") if kind == "folder" else f"file://{tmp_path / 'store'}"


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(leases, "SETTLE_S", 0.3)
    monkeypatch.setattr(leases, "POLL_S", 0.1)


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_drivers_claiming_the_same_keys_at_once_each_win_a_key_exactly_once(tmp_path, kind, quick):
    storage, won, barrier = _store(tmp_path, kind), {}, threading.Barrier(6)

    def driver(number):
        try:
            with leases.Leases(storage, driver=f"{HOST}-thread{number}:1") as claims:
                barrier.wait(timeout=30)
                won[number] = claims.claim(KEYS)
                barrier.wait(timeout=30)   # nobody releases before everyone has claimed
        except BaseException as error:
            won[number] = error
            barrier.abort()
    threads = [threading.Thread(target=driver, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [error for error in won.values() if isinstance(error, BaseException)]
    owners = collections.Counter(key for mine, _ in won.values() for key in mine)
    assert set(owners) == set(KEYS) and set(owners.values()) == {1}
    for number, (mine, held) in won.items():
        assert set(held) == set(KEYS) - mine   # what a driver did not get, it knows is held
        assert f"{HOST}-thread{number}:1" not in held.values()


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_a_released_key_is_claimed_again_and_a_taken_over_key_stays_taken(tmp_path, kind, quick):
    storage = _store(tmp_path, kind)
    with leases.Leases(storage, driver="host-a:1") as first, leases.Leases(storage, driver="host-b:1") as second:
        assert first.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})
        assert second.claim(KEYS[:2]) == (set(), {KEYS[0]: "host-a:1", KEYS[1]: "host-a:1"})
        assert second.holders(KEYS[:3]) == {KEYS[0]: "host-a:1", KEYS[1]: "host-a:1"}
        first.release([KEYS[0]])
        assert second.claim(KEYS[:2]) == ({KEYS[0]}, {KEYS[1]: "host-a:1"})
        first.release([KEYS[0]])   # not first's any more: nothing changes
        assert second.holders([KEYS[0]]) == {} and first.holders([KEYS[0]]) == {KEYS[0]: "host-b:1"}
    with leases.Leases(storage, driver="host-c:1") as third:   # both left: everything they held is free
        assert third.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_keys_of_a_driver_that_is_gone_are_taken_over(tmp_path, kind, quick):
    """On a folder and on an object store (a file:// URI takes the bucket's code path: claims written, read
    back after SETTLE_S, no atomic create): a dead driver of this machine's keys at once, another
    machine's once its heartbeat is STALE_S old by the store's clock."""
    storage = _store(tmp_path, kind)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with leases.Leases(storage, driver=f"{HOST}:{dead.pid}") as killed, \
            leases.Leases(storage, driver="elsewhere:7") as other_machine:
        killed.claim([KEYS[0]])
        other_machine.claim([KEYS[1]])
        killed._stop.set(), other_machine._stop.set()   # as if SIGKILLed: no more heartbeats, no release
        with leases.Leases(storage, driver="host-d:1") as rerun:
            # this machine, pid gone: at once; another machine's driver: not while its heartbeat is fresh
            assert rerun.claim(KEYS[:2]) == ({KEYS[0]}, {KEYS[1]: "elsewhere:7"})
            heartbeat = tmp_path / "store" / "leases" / "drivers" / "elsewhere:7"
            stale = time.time() - leases.STALE_S - 5
            os.utime(heartbeat, (stale, stale))   # its last heartbeat, a minute ago by the store's clock
            assert rerun.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})
        killed.held.clear(), other_machine.held.clear()


def test_run_claimed_waits_for_a_key_another_driver_runs_and_does_not_run_it_again(tmp_path, quick):
    storage, finished, ran, lines = str(tmp_path / "store"), set(), [], []
    items = [{"key": key} for key in KEYS[:3]]
    with leases.Leases(storage, driver="host-a:1") as first, leases.Leases(storage, driver="host-b:1") as second:
        first.claim([KEYS[0]])

        def finish_it():   # the other driver finishes its key a little later
            time.sleep(0.5)
            finished.add(KEYS[0])
            first.release([KEYS[0]])
        threading.Thread(target=finish_it).start()

        def run(batch):
            ran.extend(t["key"] for t in batch)
            finished.update(t["key"] for t in batch)
        done = leases.run_claimed("stage unlearn", lambda: [t for t in items if t["key"] not in finished], run,
                                  second, lines.append)
    assert sorted(ran) == sorted(KEYS[1:3]) and [t["key"] for t in done] == ran
    assert lines == ["  stage unlearn: 1 trial(s) held by another driver (host-a:1): waiting for them"]


def test_run_claimed_stops_when_a_trial_it_ran_is_still_pending(tmp_path, quick):
    items = [{"key": KEYS[0]}]
    with leases.Leases(str(tmp_path / "store"), driver="host-a:1") as claims:
        with pytest.raises(Exception, match="1 trial\\(s\\) ran and are still not finished"):
            leases.run_claimed("stage train", lambda: items, lambda batch: None, claims, print)


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_a_live_holder_renews_its_heartbeat_and_keeps_its_keys_past_the_stale_age(tmp_path, kind, monkeypatch):
    """The heartbeat thread rewrites the holder's heartbeat every RENEW_S: waited for until its store time
    has moved on by more than STALE_S since the claim, the holder's keys are still its own (without
    renewal the heartbeat would be STALE_S old by then and the keys taken over; the wait below would
    never end)."""
    monkeypatch.setattr(leases, "RENEW_S", 0.05)
    monkeypatch.setattr(leases, "STALE_S", 2.0)   # 40 missed renewals: a thread starved that long is a dead driver
    monkeypatch.setattr(leases, "SETTLE_S", 0.1)
    storage = _store(tmp_path, kind)
    heartbeat = tmp_path / "store" / "leases" / "drivers" / "elsewhere:7"
    with leases.Leases(storage, driver="elsewhere:7") as holder:
        assert holder.claim([KEYS[0]]) == ({KEYS[0]}, {})
        claimed_at = os.stat(heartbeat).st_mtime
        deadline = time.monotonic() + 60
        while os.stat(heartbeat).st_mtime <= claimed_at + 1.25 * leases.STALE_S:
            assert time.monotonic() < deadline, "the heartbeat was not renewed"
            time.sleep(0.05)
        with leases.Leases(storage, driver="host-e:1") as other:
            assert other.claim([KEYS[0]]) == (set(), {KEYS[0]: "elsewhere:7"})


def test_the_s3_lease_client_reaches_the_bucket_the_storage_uri_names():
    """The leases' boto3 client (conditional writes) takes endpoint, scheme, region and credentials from the
    pyarrow filesystem of the storage URI, as a cluster's --storage gives them (nothing is sent)."""
    import pyarrow.fs
    from grid.execution import conditional_s3
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(
        "s3://AKEY:SECRET@bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1")
    objects = conditional_s3.ConditionalS3(filesystem, "bucket")
    credentials = objects.client._request_signer._credentials
    assert objects.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert objects.client.meta.region_name == "eu-west-1"
    assert (credentials.access_key, credentials.secret_key) == ("AKEY", "SECRET")


def test_conditional_writes_create_once_and_replace_only_the_version_read(monkeypatch):
    """create: If-None-Match (a second create of a key fails); replace: If-Match (a version that changed
    since it was read is not replaced). moto in-process, no server."""
    import pyarrow.fs
    from moto import mock_aws
    from grid.execution import conditional_s3
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    filesystem, _ = pyarrow.fs.FileSystem.from_uri("s3://AKEY:SECRET@bucket/runs?region=us-east-1")
    with mock_aws():
        objects = conditional_s3.ConditionalS3(filesystem, "bucket")
        objects.client.create_bucket(Bucket="bucket")
        first = objects.create("k", b"held a:1 t\n")
        assert first and objects.create("k", b"held b:1 t\n") is None
        second = objects.replace("k", b"free\n", first)
        assert second and objects.replace("k", b"held b:1 t\n", first) is None   # `first` was replaced
        assert objects.read("k") == (b"free\n", second) and objects.read("gone") == (None, None)
        assert objects.replace("gone", b"free\n", first) is None
