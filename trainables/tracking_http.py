"""An MLflow tracking server that does not answer: known in seconds, not after MLflow's minutes of retries.

MLflow's HTTP client retries a failed request 7 times with exponential backoff (about 4 minutes, and
up to 120 s per attempt for an answer), then raises a paragraph. A grid run against a server uses:
- `probe`: one real MLflow request (search one experiment), no retries, a short timeout; None when
  the server answers, else the reason in a few words. `run` probes before anything else; a trial
  that failed probes to tell an outage from its own error; the driver probes when a trial fails.
- `RETRY_BUDGET`: the driver's and every trial's MLflow requests retry for about a minute (a blip of
  ~30 s passes unnoticed), then fail. Values already in the driver's environment win.
Local stores (sqlite:, file:, a path) are never probed and get no budget.
"""
import contextlib
import os
import re

from trainables import uris

PROBE_TIMEOUT_S = 5
# MLflow's backoff factor is 2 s: retries after 0, 4, 8, 16 and 32 s, i.e. about 60 s for a stopped
# server (connection refused); 20 s for an answer bounds a hung one (6 x 20 s + 60 s) and leaves time
# for a proxied upload of a large model.
RETRY_BUDGET = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
FIX = "start it (`unlearn-grid server …`) or check --tracking-uri"
FIX_AUTH = "check --tracking-uri and the credentials (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)"


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server does not answer (or answers only with errors)."""


def is_http(tracking_uri):
    return str(tracking_uri).startswith(("http://", "https://"))


def retry_budget(tracking_uri):
    """The MLflow HTTP settings of a grid's driver and trials: {} for a local store."""
    if not is_http(tracking_uri):
        return {}
    return {name: os.environ.get(name, value) for name, value in RETRY_BUDGET.items()}


@contextlib.contextmanager
def single_attempt(timeout_s=PROBE_TIMEOUT_S):
    """MLflow requests made inside: one attempt each, `timeout_s` for an answer (MLflow reads these
    variables on every request). The environment is restored on leaving."""
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s))}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(error, timeout_s):
    """A few words for why a request failed, from MLflow's exception and its chain."""
    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, TimeoutError) for e in chain) or "timed out" in text:
        return f"no answer within {timeout_s} s"
    for e in reversed(chain):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror[0].lower() + e.strerror[1:]
    code = re.search(r"too many (\d{3}) error responses|error code (\d{3})", text)
    if code:
        return f"it answers HTTP {code.group(1) or code.group(2)}"
    last = chain[-1]
    return f"{type(last).__name__}: {str(last).splitlines()[0][:200] if str(last) else ''}".rstrip(": ")


def probe(tracking_uri, timeout_s=PROBE_TIMEOUT_S):
    """None when the tracking server at an http(s) URI answers one MLflow request within `timeout_s`
    (local stores: always None); otherwise why not, in a few words."""
    if not is_http(tracking_uri):
        return None
    from mlflow.tracking import MlflowClient
    with single_attempt(timeout_s):
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        except Exception as error:
            return _reason(error, timeout_s)
    return None


def check_reachable(tracking_uri, timeout_s=PROBE_TIMEOUT_S):
    """Raise TrackingUnreachable (one line: the URI, why, what to do) unless the server answers."""
    reason = probe(tracking_uri, timeout_s)
    if reason is not None:
        fix = FIX_AUTH if re.search(r"HTTP 40[13]", reason) else FIX
        raise TrackingUnreachable(f"no MLflow tracking server answers at {uris.masked(tracking_uri)} ({reason}): {fix}; "
                                  f"nothing was run")
