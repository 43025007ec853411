"""Leases: which `unlearn-grid run` is running which trial key, so that two drivers at once on the same
store (the same grid twice, or two grids sharing originals) never train a key twice. A driver claims
the keys of a stage before scheduling them, runs the ones it got and waits for the ones another driver
holds (which it then finds finished, or claims itself if their holder is gone).

Layout under `{storage}/leases/`:
- `drivers/{driver}`: a driver's heartbeat, rewritten every RENEW_S while it runs, deleted at its end.
- folder store: `keys/{key}.{generation}`. Every change of a key's holder is a new file created with
  O_EXCL, so of two drivers creating the same generation exactly one succeeds (also on NFS v3+).
  Content: "held DRIVER" or "free". Files are never rewritten nor deleted while drivers run (a
  deleted generation could be created again by a driver that listed the folder before): ~20 bytes per
  key and claim; delete `leases/` when no driver runs, if ever.
- `s3://…`: one object per key, "held DRIVER TOKEN" or "free", changed only by conditional writes
  (grid/execution/conditional_s3.py, boto3): a key without an object is claimed by creating it with
  `If-None-Match: *` (exactly one creator wins); a free key, or one whose holder is gone, by replacing
  the version read with `If-Match: ETAG` (of two drivers taking over the same stale holder, one wins); a
  release writes "free" with If-Match on the ETag of our own claim (a key taken over meanwhile stays
  its new holder's). Holds however slow the store and however many keys: nothing depends on timing.
- other object stores (`gs://…`) and `file://` URIs, through pyarrow, which cannot write conditionally
  (GCS has preconditions of its own, ifGenerationMatch, but pyarrow does not expose them and
  google-cloud-storage is not a dependency): one object per key as on s3://, claimed as in Fischer's
  mutual exclusion: read the key, write the claim, wait SETTLE_S, read back; the last writer holds
  it (PUTs are atomic and read-after-write consistent). This assumes a driver writes within SETTLE_S of
  reading the key free; each key is read and at once written by one of CONCURRENCY threads, so the
  gap is one round trip however many keys, but a driver that stalls longer than SETTLE_S between the
  two (a paused VM, a swapping machine) can hold a key together with another driver. A gs:// claim of
  more than SETTLE_WARN_KEYS keys warns once. A plain path instead of `file://` gets the folder store.

Many keys are read and written CONCURRENCY at a time on object stores: 200 keys at +20 ms a request
claim in 10.7 s against 44.7 s one at a time (4.2x, bench/leases.py on moto, whose own ~10 ms of CPU per
request on a busy 2-core machine bounds both; a real bucket has no such floor).

A holder is gone (its keys may be claimed) when it ran on this machine and its pid is gone, or its
heartbeat is missing or older than STALE_S by the store's own clock: the age is our heartbeat's
modification time minus theirs, both set by the store, so no two machines' clocks are compared.
"""
import concurrent.futures
import os
import re
import secrets
import threading
import time
import warnings

import pyarrow.fs

from grid.execution import conditional_s3, orphans
from grid.execution.faults import StageFailed
from trainables import store

RENEW_S = 10      # heartbeat period
STALE_S = 60      # six missed heartbeats: the holder is gone (a killed driver on another machine)
SETTLE_S = 2.0    # object stores: the wait between writing a claim and reading it back
POLL_S = 2.0      # how often a driver waiting for another's keys looks again
CONCURRENCY = conditional_s3.CONCURRENCY   # object stores: keys read and written at once per driver
SETTLE_WARN_KEYS = 500   # gs://: a claim this large is worth a warning (see the module docstring)
TAKE_TRIES = 3    # s3://: a conditional write lost to a release or a failed writer is tried again on a re-read
_warned_settle = False


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", name)


class Leases:
    """`with Leases(storage) as leases:` heartbeats for this driver; `claim(keys)` -> (mine, held by others);
    `release(keys)`. Leaving the block releases every key still held and deletes the heartbeat."""

    def __init__(self, storage, driver=None):
        self.driver = driver or orphans.this_driver()
        self.filesystem, base = store._filesystem(storage)
        self.root = f"{base.rstrip('/')}/leases"
        self.local = isinstance(self.filesystem, pyarrow.fs.LocalFileSystem) and not store.is_uri(storage)
        self.conditional = None   # s3://: conditional writes; else (not local) Fischer's read, write, settle
        if isinstance(self.filesystem, pyarrow.fs.S3FileSystem):
            bucket, _, self.prefix = self.root.partition("/")
            self.conditional = conditional_s3.ConditionalS3(self.filesystem, bucket)
        self.etags = {}           # s3://: key -> the ETag of our claim (what release replaces)
        self.token = secrets.token_hex(8)
        self.held = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()   # the heartbeat thread and claims both write the heartbeat

    # heartbeats
    def _heartbeat_path(self, driver):
        return f"{self.root}/drivers/{_safe(driver)}"

    def _beat(self):
        """Rewrite our heartbeat; returns its modification time: the store's clock, now."""
        path = self._heartbeat_path(self.driver)
        with self._lock:
            with self.filesystem.open_output_stream(path) as stream:
                stream.write(f"{self.driver} {time.time():.0f}\n".encode())
            return self.filesystem.get_file_info(path).mtime

    def store_now(self):
        """The store's clock now (our heartbeat, rewritten): the `now` that gone() compares heartbeats with."""
        return self._beat()

    def __enter__(self):
        for folder in ("drivers", "keys"):
            self.filesystem.create_dir(f"{self.root}/{folder}", recursive=True)
        self._beat()
        self._thread = threading.Thread(target=self._renew, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _renew(self):
        while not self._stop.wait(RENEW_S):
            try:
                self._beat()
            except OSError:   # a store hiccup: the next beat tries again; STALE_S allows five misses
                pass

    def __exit__(self, *exc):
        self._stop.set()
        self.release(sorted(self.held))
        try:
            self.filesystem.delete_file(self._heartbeat_path(self.driver))
        except FileNotFoundError:
            pass

    def gone(self, holder, now):
        """Whether `holder` can no longer be running its keys (see the module docstring)."""
        if holder == self.driver:
            return False
        if orphans.is_orphan(holder):   # this machine, pid gone: at once
            return True
        info = self.filesystem.get_file_info(self._heartbeat_path(holder))
        return info.type != pyarrow.fs.FileType.File or (now - info.mtime).total_seconds() > STALE_S

    # key states
    def _read(self, path):
        """A key's state as words: ["free"] or ["held", DRIVER, ...]; a state being written is a holder
        we cannot name (an object store's PUT is whole; a file:// one is not)."""
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read().decode().split() or ["held", "?"]
        except FileNotFoundError:
            return ["free"]

    def _generations(self):
        """Folder store: {key: (newest generation, its path)}."""
        newest = {}
        for name in os.listdir(f"{self.root}/keys"):
            key, _, generation = name.rpartition(".")
            if generation.isdigit() and int(generation) >= newest.get(key, (-1,))[0]:
                newest[key] = (int(generation), f"{self.root}/keys/{name}")
        return newest

    def _create(self, path, content):
        """True when this call created `path`, whole: written to a file of our own, then hard-linked to
        `path`, which fails if it exists (as O_EXCL, also on NFS; O_EXCL itself would let a reader
        see the file empty before its content is written)."""
        draft = f"{path}.{self.token}.draft"
        with open(draft, "w") as file:
            file.write(content)
        try:
            os.link(draft, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)

    def _current(self, keys):
        """{key: (its state as words, its newest generation: folder store; -1 when none)}; a folder
        store's keys folder is listed once per call."""
        if not self.local:
            states = _concurrently(lambda key: self._read(f"{self.root}/keys/{key}"), keys)
            return {key: (state, None) for key, state in zip(keys, states)}
        generations = self._generations()
        current = {}
        for key in keys:
            generation, path = generations.get(key, (-1, None))
            current[key] = (self._read(path) if path else ["free"], generation)
        return current

    def _live_holder(self, now):
        """state -> the live driver other than us that holds it, else None; each holder's liveness is
        looked up once per call (thousands of keys share a few holders; the threads of one call may
        look one up twice at worst)."""
        alive = {}

        def holder(state):
            if state[0] != "held" or state[1] == self.driver:
                return None
            if state[1] not in alive:
                alive[state[1]] = not self.gone(state[1], now)
            return state[1] if alive[state[1]] else None
        return holder

    def claim(self, keys):
        """Claim every key that no live driver holds. Returns (mine: set, held: {key: holder})."""
        live_holder = self._live_holder(self._beat())
        if self.local:
            mine, held = self._claim_files(keys, live_holder)
        elif self.conditional:
            mine, held = self._claim_conditional(keys, live_holder)
        else:
            mine, held = self._claim_settle(keys, live_holder)
        self.held |= mine
        return mine, held

    def _claim_files(self, keys, live_holder):
        mine, held = set(), {}
        for key, (state, generation) in self._current(keys).items():
            if state[:2] == ["held", self.driver]:
                mine.add(key)
            elif live_holder(state):
                held[key] = state[1]
            else:
                next_path = f"{self.root}/keys/{key}.{generation + 1}"
                if self._create(next_path, f"held {self.driver}\n"):
                    mine.add(key)
                else:   # another driver created that generation first
                    state = self._read(next_path)
                    held[key] = state[1] if state[0] == "held" else "?"
        return mine, held

    def _object_key(self, key):
        return f"{self.prefix}/keys/{key}"

    def _read_object(self, key):
        """s3://: (state as words, ETag or None when there is no object)."""
        body, etag = self.conditional.read(self._object_key(key))
        return (["free"] if body is None else body.decode().split() or ["held", "?"]), etag

    def _take(self, key, live_holder):
        """s3://: (key, True, our claim's ETag) or (key, False, its live holder)."""
        claim = f"held {self.driver} {self.token}\n".encode()
        for _ in range(TAKE_TRIES):
            state, etag = self._read_object(key)
            if state[:2] == ["held", self.driver]:
                return key, True, etag
            if live_holder(state):
                return key, False, state[1]
            if etag is None:
                ours = self.conditional.create(self._object_key(key), claim)
            else:   # free, or its holder is gone: only the version we read is replaced
                ours = self.conditional.replace(self._object_key(key), claim, etag)
            if ours:
                return key, True, ours
            # another driver's write came first: read again (it holds the key now, or it released it already)
        return key, False, state[1] if state[0] == "held" else "?"

    def _claim_conditional(self, keys, live_holder):
        mine, held = set(), {}
        for key, ours, etag_or_holder in _concurrently(lambda key: self._take(key, live_holder), keys):
            if ours:
                mine.add(key)
                self.etags[key] = etag_or_holder
            else:
                held[key] = etag_or_holder
        return mine, held

    def _claim_settle(self, keys, live_holder):
        """Fischer's algorithm (gs://, file://): each key read and, when free, written at once; then one
        SETTLE_S for all; then read back: the last writer holds it."""
        global _warned_settle
        if len(keys) > SETTLE_WARN_KEYS and not _warned_settle and self.filesystem.type_name == "gcs":
            _warned_settle = True
            warnings.warn(f"leases on gs:// are claimed without conditional writes ({len(keys)} keys): two drivers "
                          f"can both hold a key if one stalls for more than {SETTLE_S} s between reading and writing "
                          "it (see docs/failures.md); run one driver at a time per gs:// storage to be safe",
                          stacklevel=3)
        claim = f"held {self.driver} {self.token}\n".encode()

        def write_if_free(key):
            path = f"{self.root}/keys/{key}"
            state = self._read(path)
            if state[:2] == ["held", self.driver] or live_holder(state):
                return key, state
            with self.filesystem.open_output_stream(path) as stream:
                stream.write(claim)
            return key, None
        mine, held, written = set(), {}, []
        for key, state in _concurrently(write_if_free, keys):
            if state is None:
                written.append(key)
            elif state[1] == self.driver:
                mine.add(key)
            else:
                held[key] = state[1]
        if written:
            time.sleep(SETTLE_S)
            for key, (state, _) in self._current(written).items():
                if state[0] == "held" and state[1:] == [self.driver, self.token]:
                    mine.add(key)
                else:
                    held[key] = state[1] if state[0] == "held" else "?"
        return mine, held

    def release(self, keys):
        """Mark our keys free (a key another driver took over meanwhile stays theirs)."""
        ours = [key for key in keys if key in self.held]
        self.held -= set(ours)
        if self.conditional:
            etags = [(key, self.etags.pop(key, None)) for key in ours]
            _concurrently(lambda pair: self.conditional.replace(self._object_key(pair[0]), b"free\n", pair[1]),
                          [pair for pair in etags if pair[1]])
            return
        if self.local:
            for key, (state, generation) in self._current(ours).items():
                if state[:2] == ["held", self.driver]:
                    self._create(f"{self.root}/keys/{key}.{generation + 1}", "free\n")
            return

        def free(item):
            key, (state, _) = item
            if state[1:] == [self.driver, self.token]:
                with self.filesystem.open_output_stream(f"{self.root}/keys/{key}") as stream:
                    stream.write(b"free\n")
        _concurrently(free, list(self._current(ours).items()))

    def holders(self, keys):
        """{key: holder} of the keys another live driver holds now (nothing is claimed)."""
        live_holder = self._live_holder(self._beat())
        if self.conditional:
            states = _concurrently(lambda key: self._read_object(key)[0], keys)
            return {key: state[1] for key, state in zip(keys, states) if live_holder(state)}
        return {key: state[1] for key, (state, _) in self._current(keys).items() if live_holder(state)}


def _concurrently(function, items):
    """[function(item) for item in items], CONCURRENCY at a time (object stores: round trips overlap)."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(CONCURRENCY, len(items)), "lease-io") as pool:
        return list(pool.map(function, items))


def lease_key(item):
    """What a driver claims for an item: its model key where it has one (trainables/keys.py), else its
    key. Two grids that evaluate one Retrain model differently (their runs' keys differ) then do not
    train it side by side: the second waits, then finds it stored and only evaluates it; and the
    driver's check of stored models (faults.py) skips exactly the model keys other drivers hold."""
    return item.get("model_key", item["key"])


def run_claimed(what, pending, run, leases, echo, todo=None):
    """Run `pending()`'s items (dicts with "key") that this driver can claim (by lease_key); wait for
    those another driver holds, then look again; until nothing is pending. `run(items)` runs a batch;
    `todo`: a first pending() already read. Returns the items this driver ran. An item this driver ran
    that is still pending is an error, not a loop."""
    ran, waiting_for = [], None
    while True:
        todo = pending() if todo is None else todo
        if not todo:
            return ran
        again = [t["key"] for t in todo if t["key"] in {r["key"] for r in ran}]
        if again:
            raise StageFailed(f"{what}: {len(again)} trial(s) ran and are still not finished: {again[:5]}")
        mine, held = leases.claim([lease_key(t) for t in todo])
        if mine:
            # a key another driver finished between pending() and our claim is not run again
            batch = [t for t in pending() if lease_key(t) in mine]
            leases.release(sorted(set(mine) - {lease_key(t) for t in batch}))
            try:
                if batch:
                    run(batch)
            finally:
                leases.release(sorted(lease_key(t) for t in batch))
            ran += batch
            todo = None
            continue
        holders = sorted(set(held.values()))
        if holders != waiting_for:
            echo(f"  {what}: {len(held)} trial(s) held by another driver ({', '.join(holders)}): waiting for them")
            waiting_for = holders
        time.sleep(POLL_S)
        todo = None
