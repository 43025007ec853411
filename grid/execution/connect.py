"""The driver's Ray: a fresh local instance by default, or a running cluster by address.

A cluster that has gone away must not make `run` wait: Ray's own connect retries a dead GCS address
for as long as it is left running, so an address is first checked with a plain TCP connection.
"""
import os
import socket

import ray

from grid.execution import orphans, worker_logs

PROBE_TIMEOUT_S = 10
AUTH_HINT = ("if that cluster uses token authentication (`ray start` turns it on whenever ~/.ray/auth_token "
             "exists; cluster.yaml sets it), run with RAY_AUTH_MODE=token and the cluster's token "
             "(~/.ray/auth_token or RAY_AUTH_TOKEN)")
FIX = "start that cluster (`ray start --head`, `ray up cluster.yaml`), or drop --address to run on a local Ray of its own"


def resolve(address):
    """HOST:PORT of the cluster `address` names ('auto': the one `ray start` recorded on this machine)."""
    from ray._private.services import canonicalize_bootstrap_address
    try:
        resolved = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as error:
        raise ConnectionError(f"--address {address}: {str(error).strip()} {FIX}") from None
    if resolved is None:
        raise ConnectionError(f"--address {address}: no running Ray cluster found on this machine; {FIX}")
    return resolved


def check_reachable(address, timeout_s=PROBE_TIMEOUT_S):
    """Raise ConnectionError (one line: the address, why, how to fix it) unless something answers there.
    No address or "local" means a Ray of our own: nothing to check."""
    if address in (None, "local"):
        return None
    resolved = resolve(address)
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        via = "" if resolved == address else f" (--address {address})"
        raise ConnectionError(f"no Ray cluster answers at {resolved}{via}: {error.strerror or error}; {FIX}") from None
    return resolved


def init(address=None):
    """ray.init for `unlearn-grid run`. Without an address: a fresh local Ray of our own ("local"), never a
    cluster that an earlier `ray start` left recorded on this machine. (Ray binds its GCS to every
    interface whatever node address it is given; a local Ray has token auth on by default since 2.59.)"""
    # Tune records every trial's error and `run` summarises them; Ray's own "Unhandled error" log of the
    # futures Tune drops when it stops a stage would repeat them, late (at shutdown), after the summary
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        # log_to_driver: the workers' output reaches the driver, the one copy that outlives a node taken
        # away; it goes to a file, not the terminal (grid/execution/worker_logs.py)
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=True, configure_logging=False)
    except ConnectionError as error:
        # Ray switches a driver to token mode by itself only for address "auto"; with HOST:PORT a cluster
        # that wants a token refuses with a bare "Failed to connect"
        if address in (None, "local", "auto") or "RAY_AUTH_MODE" in os.environ:
            raise
        raise ConnectionError(f"{error}; {AUTH_HINT}") from None
    worker_logs.capture(worker_logs.default_path(orphans.this_driver()))
