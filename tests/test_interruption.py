"""trainables/interruption.py against a stand-in instance metadata service (http.server on 127.0.0.1).

The stand-in counts the notice requests and sets an Event once it has answered N of them; the tests
wait on those events, or on `interruption.wait`, which returns as soon as the poller has stored a
notice. Timeouts below only bound a failure: a passing test waits for events, never for a clock.
"""
import http.server
import json
import threading

import pytest

from trainables import interruption

FAILURE_BOUND_S = 30
NOTICE = {"action": "terminate", "time": "2026-12-05T08:22:00Z"}


class FakeIMDS:
    """IMDS as the poller sees it: PUT /latest/api/token gives a token (or 403 when `token_endpoint` is
    off), GET .../spot/instance-action answers 401 without the current token (when `require_token`),
    404 while there is no notice, 200 with the notice once `notice` is set."""

    def __init__(self, require_token=True, token_endpoint=True, drop=0):
        self.require_token = require_token
        self.token_endpoint = token_endpoint
        self.drop = drop                # the first `drop` notice requests get no answer (connection closed)
        self.notice = None
        self.lock = threading.Lock()
        self.tokens_issued = 0
        self.valid_token = None
        self.token_ttls = []            # the TTL header of every PUT
        self.get_tokens = []            # the token header of every GET (None when absent)
        self.answered = 0               # GETs answered (dropped ones not counted)
        self.dropped = 0
        self._waiters = []              # (n, Event): set once `answered` >= n
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                fake._put(self)

            def do_GET(self):
                fake._get(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def after_answers(self, n):
        """An Event set once n notice requests have been answered."""
        event = threading.Event()
        with self.lock:
            self._waiters.append((n, event))
            if self.answered >= n:
                event.set()
        return event

    def _put(self, handler):
        if handler.path != interruption.TOKEN_PATH or not self.token_endpoint:
            self._send(handler, 403, b"")
            return
        with self.lock:
            self.token_ttls.append(handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds"))
            self.tokens_issued += 1
            self.valid_token = f"token-{self.tokens_issued}"
            token = self.valid_token
        self._send(handler, 200, token.encode())

    def _get(self, handler):
        token = handler.headers.get("X-aws-ec2-metadata-token")
        with self.lock:
            if self.drop > 0:
                self.drop -= 1
                self.dropped += 1
                handler.close_connection = True
                return                  # no status line: the client sees the connection closed
            self.get_tokens.append(token)
            if handler.path != interruption.NOTICE_PATH:
                status, body = 404, b""
            elif self.require_token and (token is None or token != self.valid_token):
                status, body = 401, b""
            elif self.notice is None:
                status, body = 404, b""
            else:
                status, body = 200, json.dumps(self.notice).encode()
        self._send(handler, status, body)
        with self.lock:
            self.answered += 1
            for n, event in self._waiters:
                if self.answered >= n:
                    event.set()

    @staticmethod
    def _send(handler, status, body):
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(autouse=True)
def fresh_poller():
    interruption.stop()
    yield
    interruption.stop()


@pytest.fixture
def imds(monkeypatch):
    """Start a FakeIMDS (keyword arguments as its own) and point the poller at it, polling every 10 ms."""
    fakes = []

    def start(**options):
        fake = FakeIMDS(**options)
        fakes.append(fake)
        monkeypatch.setenv(interruption.ENV_URL, fake.url)
        monkeypatch.setenv(interruption.ENV_SECONDS, "0.01")
        return fake
    yield start
    for fake in fakes:
        fake.close()


def pollers():
    return [t for t in threading.enumerate() if t.name == interruption.THREAD_NAME]


def test_no_notice_while_the_service_answers_404(imds):
    fake = imds()
    assert interruption.notice() is None
    assert fake.after_answers(5).wait(FAILURE_BOUND_S), "the poller stopped polling"
    assert interruption.notice() is None
    assert interruption.checkpoint_now() is False
    assert fake.tokens_issued == 1, "one token serves every poll"


def test_a_notice_is_seen_and_checkpoints_from_then_on(imds):
    fake = imds()
    assert interruption.checkpoint_now() is False
    assert fake.after_answers(2).wait(FAILURE_BOUND_S)
    with fake.lock:
        fake.notice = NOTICE
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE
    assert interruption.notice() == NOTICE
    assert interruption.checkpoint_now() is True
    assert interruption.checkpoint_now() is True, "every epoch after the notice checkpoints too"


def test_the_imdsv2_token_is_sent(imds):
    fake = imds(require_token=True)
    fake.notice = NOTICE
    interruption.notice()
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE    # the stand-in answers 401 without the token
    assert fake.token_ttls == ["21600"]
    assert fake.get_tokens and all(token == "token-1" for token in fake.get_tokens)


def test_a_401_fetches_a_new_token(imds):
    fake = imds(require_token=True)
    interruption.notice()
    assert fake.after_answers(2).wait(FAILURE_BOUND_S)
    with fake.lock:                     # the token expires and the notice comes at once
        fake.valid_token = None
        fake.notice = NOTICE
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE
    assert fake.tokens_issued == 2
    assert fake.get_tokens[-1] == "token-2"


def test_without_a_token_endpoint_it_asks_without_a_token(imds):
    fake = imds(require_token=False, token_endpoint=False)
    fake.notice = NOTICE
    interruption.notice()
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE
    assert fake.get_tokens and all(token is None for token in fake.get_tokens)


def test_connection_errors_are_no_notice_and_polling_goes_on(imds):
    fake = imds(drop=3)
    fake.notice = NOTICE
    interruption.notice()
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE
    assert fake.dropped == 3


def test_unset_variable_starts_no_thread_and_makes_no_request(monkeypatch, imds):
    fake = imds()
    monkeypatch.delenv(interruption.ENV_URL)
    assert interruption.notice() is None
    assert interruption.checkpoint_now() is False
    assert pollers() == []
    assert fake.answered == 0 and fake.tokens_issued == 0
    # a reused worker whose next trial's driver sets the variable starts polling then
    monkeypatch.setenv(interruption.ENV_URL, fake.url)
    interruption.notice()
    assert len(pollers()) == 1
    assert fake.after_answers(1).wait(FAILURE_BOUND_S)


def test_one_poller_per_process_however_many_callers(imds):
    imds()
    callers = 8
    barrier = threading.Barrier(callers)

    def call():
        barrier.wait()
        interruption.notice()
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pollers()) == 1


def test_stop_ends_the_poller_and_forgets_the_notice(imds):
    fake = imds()
    fake.notice = NOTICE
    interruption.notice()
    assert interruption.wait(FAILURE_BOUND_S) == NOTICE
    interruption.stop()
    assert pollers() == []
    with fake.lock:
        fake.notice = None
    assert interruption.wait(0) is None


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_interval_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(interruption.ENV_URL, "http://127.0.0.1:9")
    monkeypatch.setenv(interruption.ENV_SECONDS, value)
    with pytest.raises(ValueError, match=interruption.ENV_SECONDS):
        interruption.notice()
    assert pollers() == []
