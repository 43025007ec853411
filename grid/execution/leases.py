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
- object store (`s3://…`, `gs://…`, which pyarrow cannot write conditionally): one object per key,
  "held DRIVER TOKEN" or "free", claimed as in Fischer's mutual exclusion: write, wait SETTLE_S,
  read back; the last writer holds it (PUTs are atomic and read-after-write consistent). This
  assumes a driver writes within SETTLE_S of reading the key free, which holds unless a driver stalls.

A holder is gone (its keys may be claimed) when it ran on this machine and its pid is gone, or its
heartbeat is missing or older than STALE_S by the store's own clock: the age is our heartbeat's
modification time minus theirs, both set by the store, so no two machines' clocks are compared.
"""
import os
import re
import secrets
import threading
import time

import pyarrow.fs

from grid.execution import orphans
from grid.execution.faults import StageFailed
from trainables import store

RENEW_S = 10      # heartbeat period
STALE_S = 60      # six missed heartbeats: the holder is gone (a killed driver on another machine)
SETTLE_S = 2.0    # object stores: the wait between writing a claim and reading it back
POLL_S = 2.0      # how often a driver waiting for another's keys looks again


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
            return {key: (self._read(f"{self.root}/keys/{key}"), None) for key in keys}
        generations = self._generations()
        current = {}
        for key in keys:
            generation, path = generations.get(key, (-1, None))
            current[key] = (self._read(path) if path else ["free"], generation)
        return current

    def _live_holder(self, now):
        """state -> the live driver other than us that holds it, else None; each holder's liveness is
        looked up once per call (thousands of keys share a few holders)."""
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
        mine, held, contested = set(), {}, []
        for key, (state, generation) in self._current(keys).items():
            if state[:2] == ["held", self.driver]:
                mine.add(key)
            elif live_holder(state):
                held[key] = state[1]
            elif self.local:
                next_path = f"{self.root}/keys/{key}.{generation + 1}"
                if self._create(next_path, f"held {self.driver}\n"):
                    mine.add(key)
                else:   # another driver created that generation first
                    state = self._read(next_path)
                    held[key] = state[1] if state[0] == "held" else "?"
            else:
                contested.append(key)
        if contested:
            for key in contested:
                with self.filesystem.open_output_stream(f"{self.root}/keys/{key}") as stream:
                    stream.write(f"held {self.driver} {self.token}\n".encode())
            time.sleep(SETTLE_S)
            for key in contested:
                state = self._read(f"{self.root}/keys/{key}")
                if state[0] == "held" and state[1:] == [self.driver, self.token]:
                    mine.add(key)
                else:
                    held[key] = state[1] if state[0] == "held" else "?"
        self.held |= mine
        return mine, held

    def release(self, keys):
        """Mark our keys free (a key another driver took over meanwhile stays theirs)."""
        ours = [key for key in keys if key in self.held]
        self.held -= set(ours)
        for key, (state, generation) in self._current(ours).items():
            if self.local:
                if state[:2] == ["held", self.driver]:
                    self._create(f"{self.root}/keys/{key}.{generation + 1}", "free\n")
            elif state[1:] == [self.driver, self.token]:
                with self.filesystem.open_output_stream(f"{self.root}/keys/{key}") as stream:
                    stream.write(b"free\n")

    def holders(self, keys):
        """{key: holder} of the keys another live driver holds now (nothing is claimed)."""
        live_holder = self._live_holder(self._beat())
        return {key: state[1] for key, (state, _) in self._current(keys).items() if live_holder(state)}


def run_claimed(what, pending, run, leases, echo, todo=None):
    """Run `pending()`'s items (dicts with "key") that this driver can claim; wait for those another
    driver holds, then look again; until nothing is pending. `run(items)` runs a batch; `todo`: a first
    pending() already read. Returns the items this driver ran. An item this driver ran that is still
    pending is an error, not a loop."""
    ran, waiting_for = [], None
    while True:
        todo = pending() if todo is None else todo
        if not todo:
            return ran
        again = [t["key"] for t in todo if t["key"] in {r["key"] for r in ran}]
        if again:
            raise StageFailed(f"{what}: {len(again)} trial(s) ran and are still not finished: {again[:5]}")
        mine, held = leases.claim([t["key"] for t in todo])
        if mine:
            # a key another driver finished between pending() and our claim is not run again
            batch = [t for t in pending() if t["key"] in mine]
            leases.release(sorted(mine - {t["key"] for t in batch}))
            try:
                if batch:
                    run(batch)
            finally:
                leases.release(sorted(t["key"] for t in batch))
            ran += batch
            todo = None
            continue
        holders = sorted(set(held.values()))
        if holders != waiting_for:
            echo(f"  {what}: {len(held)} trial(s) held by another driver ({', '.join(holders)}): waiting for them")
            waiting_for = holders
        time.sleep(POLL_S)
        todo = None
