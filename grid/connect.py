"""The driver's Ray: a fresh local instance by default, or a running cluster by address."""
import os

import ray

AUTH_HINT = ("if that cluster uses token authentication (`ray start` turns it on whenever ~/.ray/auth_token "
             "exists; cluster.yaml sets it), run with RAY_AUTH_MODE=token and the cluster's token "
             "(~/.ray/auth_token or RAY_AUTH_TOKEN)")


def init(address=None):
    """ray.init for `unlearn-grid run`. Without an address: a fresh local Ray of our own ("local"), never a
    cluster that an earlier `ray start` left recorded on this machine."""
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as error:
        # Ray switches a driver to token mode by itself only for address "auto"; with HOST:PORT a cluster
        # that wants a token refuses with a bare "Failed to connect"
        if address in (None, "local", "auto") or "RAY_AUTH_MODE" in os.environ:
            raise
        raise ConnectionError(f"{error}; {AUTH_HINT}") from None
