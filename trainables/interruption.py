"""AWS spot interruption notices: checkpoint at once when the node is about to go.

AWS warns a spot instance 2 minutes before it reclaims it, through the instance metadata service
(IMDS): `GET {URL}/latest/meta-data/spot/instance-action` answers 404 while there is no notice and 200
with `{"action": "terminate", "time": "..."}` once there is. The poller asks for an IMDSv2 session
token first (`PUT {URL}/latest/api/token`), fetches a new one when a request is refused with 401, and
asks without a token (IMDSv1) when the token endpoint does not give one.

Opt-in, with the metadata base URL:

    UNLEARN_GRID_SPOT_NOTICE_URL=http://169.254.169.254     # unset: no thread, no request
    UNLEARN_GRID_SPOT_NOTICE_SECONDS=5                      # poll interval (default 5)

Off by default because most machines are not EC2 instances: there the link-local address answers
nothing and every poll would only wait for its timeout. Like every UNLEARN_GRID_* variable, the
driver's value reaches every trial's worker (trainables/plugins.py), and 169.254.169.254 is each
instance's own metadata service, so a worker polls the notice of the node it runs on.

"At once" means at the end of the epoch in progress: `checkpoint_now()` says True from the first
notice on, and the trial checkpoints at the end of that epoch and of every epoch after it until the
node goes away. The notice's 2 minutes (less the poll interval) bound the epoch length for which this
saves the epoch in progress: the bundled paper grids' epochs on a GPU are well under that bound (we
have no GPU figure of our own: `bench/train_throughput.py --epoch` measures one). A longer epoch ends
after the node is gone, and the trial resumes from its last checkpoint as before.

Standard library only (no torch, no Ray): one daemon thread per process, started by the first call
of `notice()` or `checkpoint_now()`.
"""
import json
import os
import threading
import urllib.error
import urllib.request

ENV_URL = "UNLEARN_GRID_SPOT_NOTICE_URL"
ENV_SECONDS = "UNLEARN_GRID_SPOT_NOTICE_SECONDS"
DEFAULT_SECONDS = 5.0
TOKEN_PATH = "/latest/api/token"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_TTL_SECONDS = "21600"     # 6 h, IMDSv2's maximum; a 401 fetches a new token anyway
REQUEST_SECONDS = 2             # IMDS answers in milliseconds; a poll must never hold up the next one long
THREAD_NAME = "unlearn-grid-spot-notice"

# Never through a proxy: http_proxy in a node's environment would send the link-local address to the
# proxy, which cannot reach this instance's metadata service.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_lock = threading.Lock()
_thread = None          # the poller, once started
_stopping = None        # its stop event (a new one per start, so a stopped poller never sees a later start)
_seen = threading.Event()
_notice = None          # the notice dict, once seen


def notice():
    """The spot interruption notice ({"action": ..., "time": ...}) once one has been seen, else None.
    The first call with UNLEARN_GRID_SPOT_NOTICE_URL set starts the poller; later calls only read."""
    _start_once()
    return _notice


def checkpoint_now():
    """True once a notice has been seen: checkpoint at the end of this epoch and every epoch after."""
    return notice() is not None


def wait(timeout):
    """Block until a notice is seen or `timeout` seconds pass; the notice, or None. Starts nothing."""
    _seen.wait(timeout)
    return _notice


def stop():
    """Stop the poller (if any) and forget what it saw; the next `notice()` starts afresh (tests)."""
    global _thread, _stopping, _notice
    with _lock:
        thread, stopping = _thread, _stopping
        _thread = _stopping = None
    if thread is not None:
        stopping.set()
        thread.join()
    with _lock:
        _notice = None
        _seen.clear()


def _start_once():
    # The variable is read on every call until the poller starts: Ray reuses a worker process for the
    # trials of other drivers, whose UNLEARN_GRID_* variables replace this one's (plugins.apply_worker_env).
    global _thread, _stopping
    if _thread is not None:
        return
    with _lock:
        url = os.environ.get(ENV_URL, "").strip()
        if _thread is not None or not url:
            return
        seconds = _interval()
        _stopping = threading.Event()
        _thread = threading.Thread(target=_poll, args=(url.rstrip("/"), seconds, _stopping),
                                   name=THREAD_NAME, daemon=True)
        _thread.start()


def _interval():
    value = os.environ.get(ENV_SECONDS, "").strip()
    if not value:
        return DEFAULT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{ENV_SECONDS}={value!r}: the poll interval must be a positive number of seconds")
    return seconds


def _poll(base, seconds, stopping):
    """The poller thread: ask every `seconds` until a notice comes or `stopping` is set."""
    global _notice
    token = None
    while not stopping.is_set():
        found, token = _poll_once(base, token)
        if found is not None:
            with _lock:
                if not stopping.is_set():
                    _notice = found
                    _seen.set()
            return      # the node is going away: nothing more to learn
        stopping.wait(seconds)


def _poll_once(base, token):
    """(the notice or None, the token for the next poll)."""
    if token is None:
        token = _fetch_token(base)
    status, body = _get_notice(base, token)
    if status == 401:   # the token expired, or IMDSv2 is required and we had none: a new token, once
        token = _fetch_token(base)
        status, body = _get_notice(base, token)
    if status != 200:
        return None, token
    return _parse(body), token


def _fetch_token(base):
    """An IMDSv2 token, or None when the endpoint does not give one (then the poll goes without: IMDSv1)."""
    request = urllib.request.Request(base + TOKEN_PATH, method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL_SECONDS})
    try:
        with _opener.open(request, timeout=REQUEST_SECONDS) as response:
            return response.read().decode().strip() or None
    except (OSError, ValueError):
        return None


def _get_notice(base, token):
    """(HTTP status, body) of the instance-action request; (None, b"") when nothing answered. Quiet:
    a connection error is no notice, and the next poll tries again."""
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    request = urllib.request.Request(base + NOTICE_PATH, headers=headers)
    try:
        with _opener.open(request, timeout=REQUEST_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:    # 404 (no notice), 401 (token), ...: a status, not a failure
        error.close()
        return error.code, b""
    except (OSError, ValueError):               # refused, reset, timed out (OSError includes URLError)
        return None, b""


def _parse(body):
    """The notice as a dict. A 200 is a notice even if its body does not parse: checkpointing is cheap."""
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    return found if isinstance(found, dict) else {"action": None, "time": None, "body": body.decode(errors="replace")}
