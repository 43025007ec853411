"""Leases on a slow bucket (grid/execution/leases.py on s3://; issue 27): moto's S3 server on 127.0.0.1 behind
latency-injecting TCP proxies, one per driver, so a driver's every request reaches the store late as it
would over a real network. Two drivers claim the same 200 keys at once:
- the claim leases.py made before conditional writes (one key at a time, Fischer's write, wait SETTLE_S,
  read back; kept below as `claim_one_at_a_time`) gives some keys to both drivers once one driver is
  slower than the other: it reads the first keys free before the fast one writes them, and writes them
  (hundreds of requests later) after the fast one has read its claims back;
- the conditional writes give every key to exactly one driver, also when both are slow, and a stale
  holder's keys to exactly one of two drivers taking them over at once.
~75 s on a busy 2-core machine (moto spends ~10 ms of CPU per request; the old claim alone ~28 s)."""
import collections
import contextlib
import socket
import threading
import time

import pytest

from grid.execution import leases
from services import s3_bucket

pytestmark = pytest.mark.system   # the system tier: make test-system

KEYS = [f"{i:016x}" for i in range(200)]
FEW = KEYS[:20]   # where nothing races: fewer requests to moto, which takes ~10 ms of CPU for each
SLOW_S = 0.008    # added to each request of the slow driver: ~4x what moto takes for one on 2 cores
SETTLE_S = 0.1    # the old claim's wait: far less than the slow driver's seconds between reading a key and writing it


@contextlib.contextmanager
def latency_proxy(target_port, delay_s):
    """127.0.0.1:PORT forwarding to target_port, every chunk a client sends held back delay_s (a request
    reaches the store delay_s late, or twice that when its body comes in a second send). Yields PORT."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    sockets, stop = [listener], threading.Event()

    def pump(source, sink, delay):
        try:
            while data := source.recv(1 << 16):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def accept():
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for end in (client, upstream):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sockets.append(end)
            threading.Thread(target=pump, args=(client, upstream, delay_s), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, 0), daemon=True).start()
    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join()
        for end in sockets:
            end.close()


@pytest.fixture(scope="module")
def bucket():
    """storage(delay_s, prefix) -> an s3:// URI of one bucket on moto's server, reached through a proxy
    adding delay_s per request; and the boto3 client (direct)."""
    from moto.s3.responses import S3Response
    put_object, delete_object, atomic = S3Response.put_object, S3Response.delete_object, threading.Lock()

    # moto checks If-None-Match/If-Match and then writes, with no lock across its server's threads: two
    # conditional PUTs of one key at the same instant could both pass. S3 decides them atomically; so
    # does moto here, its conditional writes serialized (the delays are in the proxies, not in here)
    def atomically(method):
        def handler(self, *args, **kwargs):
            with atomic:
                return method(self, *args, **kwargs)
        return handler
    with s3_bucket() as (uri, client), contextlib.ExitStack() as proxies, pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Response, "put_object", atomically(put_object))
        patch.setattr(S3Response, "delete_object", atomically(delete_object))
        moto_port = int(uri("x").split("endpoint_override=")[1].split("&")[0].rsplit(":", 1)[1])
        ports = {}

        def storage(delay_s, prefix):
            if delay_s not in ports:
                ports[delay_s] = proxies.enter_context(latency_proxy(moto_port, delay_s))
            return (f"s3://testing:testing@grid/{prefix}?endpoint_override=127.0.0.1:{ports[delay_s]}"
                    "&scheme=http&region=us-east-1")
        yield storage, client


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(leases, "SETTLE_S", SETTLE_S)
    monkeypatch.setattr(leases, "POLL_S", 0.1)


def claim_one_at_a_time(claims, keys):
    """leases.py's object-store claim before issue 27, kept to show what the conditional writes fix: every
    key read, then every free one written, one request at a time; SETTLE_S; read back: the last writer
    holds it. Safe only while a driver writes a key within SETTLE_S of reading it free."""
    live_holder = claims._live_holder(claims._beat())
    mine, held, contested = set(), {}, []
    for key in keys:
        state = claims._read(f"{claims.root}/keys/{key}")
        if state[:2] == ["held", claims.driver]:
            mine.add(key)
        elif live_holder(state):
            held[key] = state[1]
        else:
            contested.append(key)
    for key in contested:
        with claims.filesystem.open_output_stream(f"{claims.root}/keys/{key}") as stream:
            stream.write(f"held {claims.driver} {claims.token}\n".encode())
    time.sleep(leases.SETTLE_S)
    for key in contested:
        state = claims._read(f"{claims.root}/keys/{key}")
        if state[0] == "held" and state[1:] == [claims.driver, claims.token]:
            mine.add(key)
        else:
            held[key] = state[1] if state[0] == "held" else "?"
    return mine, held


def claim_together(drivers, claim):
    """{driver name: claim(its Leases, KEYS)}, every driver in its own thread, started at one barrier."""
    barrier, won = threading.Barrier(len(drivers)), {}

    def run(claims):
        try:
            barrier.wait(timeout=60)
            won[claims.driver] = claim(claims, KEYS)
        except BaseException as error:
            won[claims.driver] = error
            barrier.abort()
    threads = [threading.Thread(target=run, args=(claims,)) for claims in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [error for error in won.values() if isinstance(error, BaseException)]
    assert not errors, errors
    return won


def test_the_old_claim_gives_keys_to_both_drivers_when_one_is_slow(bucket, quick):
    storage, _ = bucket
    with leases.Leases(storage(0, "old"), driver="host-a:1") as fast, \
            leases.Leases(storage(SLOW_S, "old"), driver="host-b:1") as slow:
        won = claim_together([fast, slow], claim_one_at_a_time)
        fast.held.clear(), slow.held.clear()   # (their release is not the old code's; nothing to release)
    both = won["host-a:1"][0] & won["host-b:1"][0]
    # pyarrow reads a key with 2 requests and writes it with 3: the slow driver reads the first keys free
    # before the fast one (400 requests in) writes them, and writes them long after it has read them back
    assert both, "no key held by both drivers"


@pytest.mark.parametrize("delays", [(0, SLOW_S), (SLOW_S, SLOW_S)], ids=["one slow", "both slow"])
def test_conditional_writes_give_every_key_to_exactly_one_driver(bucket, quick, delays):
    storage, _ = bucket
    prefix = f"new-{delays[0]}"
    with leases.Leases(storage(delays[0], prefix), driver="host-a:1") as first, \
            leases.Leases(storage(delays[1], prefix), driver="host-b:1") as second:
        won = claim_together([first, second], leases.Leases.claim)
        owners = collections.Counter(key for mine, _ in won.values() for key in mine)
        assert set(owners) == set(KEYS) and set(owners.values()) == {1}   # no key twice, none unclaimed
        for name, (mine, held) in won.items():
            other = ({"host-a:1", "host-b:1"} - {name}).pop()
            assert held == {key: other for key in set(KEYS) - mine}    # what it did not get, it knows who holds


def test_released_keys_are_claimed_by_another_driver_and_a_live_holder_keeps_its_keys(bucket, quick):
    storage, _ = bucket
    with leases.Leases(storage(SLOW_S, "release"), driver="host-a:1") as first, \
            leases.Leases(storage(SLOW_S, "release"), driver="host-b:1") as second:
        assert first.claim(FEW) == (set(FEW), {})
        assert second.claim(FEW) == (set(), {key: "host-a:1" for key in FEW})   # a live holder's: not taken
        assert second.holders(FEW[:3]) == {key: "host-a:1" for key in FEW[:3]}
        first.release(FEW[:10])
        assert second.claim(FEW) == (set(FEW[:10]), {key: "host-a:1" for key in FEW[10:]})
        first.release(FEW[:10])   # not first's any more: nothing changes
        assert first.holders(FEW[:10]) == {key: "host-b:1" for key in FEW[:10]}
    with leases.Leases(storage(0, "release"), driver="host-c:1") as third:   # both left: everything is free
        assert third.claim(FEW) == (set(FEW), {})


def test_a_stale_holders_keys_are_taken_over_by_exactly_one_of_two_drivers(bucket, quick):
    storage, client = bucket
    with leases.Leases(storage(0, "stale"), driver="elsewhere:7") as dead:
        assert dead.claim(KEYS) == (set(KEYS), {})
        dead._stop.set()   # as if its machine died: no more heartbeats, no release
        client.delete_object(Bucket="grid", Key="stale/leases/drivers/elsewhere:7")   # (as a stale one counts)
        with leases.Leases(storage(SLOW_S, "stale"), driver="host-b:1") as second, \
                leases.Leases(storage(SLOW_S, "stale"), driver="host-c:1") as third:
            won = claim_together([second, third], leases.Leases.claim)
            owners = collections.Counter(key for mine, _ in won.values() for key in mine)
            assert set(owners) == set(KEYS) and set(owners.values()) == {1}
            dead.release(KEYS)   # the dead driver's late release: its version was replaced, so nothing changes
            holders = second.holders(KEYS)
            assert holders == {key: "host-c:1" for key in won["host-c:1"][0]}
