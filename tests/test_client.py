"""The HTTP client: pure request building and response classification, then real POSTs to the fake."""

from __future__ import annotations

import email.utils
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from bento_tasks import __version__, client
from bento_tasks.client import Verdict, build_post, classify, parse_retry_after, post_events
from bento_tasks.conf import Settings

SETTINGS = Settings(site_uuid="site-1", publishable_key="pub", secret_key="sec", api_url="https://bento.test/api/v1")
EVENTS = [b'{"type":"t","email":"a@example.com"}', b'{"type":"u","email":"b@example.com"}']


def test_build_post_joins_encoded_events_without_reencoding():
    """The body is {"events": [...]} made of the queued JSON, with auth, type and user agent."""
    post = build_post(SETTINGS, EVENTS)
    assert post.url == "https://bento.test/api/v1/batch/events"
    assert post.params == {"site_uuid": "site-1"}
    assert json.loads(post.body) == {"events": [json.loads(e) for e in EVENTS]}
    assert post.auth == ("pub", "sec") and "sec" not in repr(post)
    assert post.headers["Content-Type"] == "application/json"
    assert f"bento-tasks/{__version__}" in post.headers["User-Agent"]


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (429, Verdict.RATE_LIMITED),
        (408, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (400, Verdict.REFUSED),
        (413, Verdict.REFUSED),
        (422, Verdict.REFUSED),
        (401, Verdict.CONFIG),
        (403, Verdict.CONFIG),
        (404, Verdict.CONFIG),
        (301, Verdict.CONFIG),
        (405, Verdict.CONFIG),
    ],
)
def test_classify_maps_every_status(status, verdict):
    """Each status code Bento documents leads to its handling."""
    assert classify(status, {}, b'{"results": 2, "failed": 0}', 2, now=0).verdict is verdict


def test_classify_reads_results_and_failed():
    """A 2xx answer's results and failed counts are kept."""
    outcome = classify(200, {}, b'{"results": 7, "failed": 3}', 10, now=0)
    assert (outcome.accepted, outcome.failed) == (7, 3)


@pytest.mark.parametrize("body", [b"<html>ok</html>", b"{}", b"[]", b'{"results": "many"}', b'{"results": 10'])
def test_a_2xx_without_bentos_answer_is_unanswered(body):
    """A 2xx that does not carry {"results": N} (a proxy page, a truncated answer) does not delete the batch:
    it is retried as a lost answer, since Bento may have recorded the events."""
    assert classify(200, {}, body, 10, now=0).verdict is Verdict.UNANSWERED


def test_retry_after_seconds_and_http_date():
    """Retry-After is read both as delta-seconds and as an HTTP date."""
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("inf", now) is None and parse_retry_after("nan", now) is None
    assert parse_retry_after("1e12", now) == 3600  # capped: a bad header must not stop delivery for good
    assert parse_retry_after(None, now) is None
    assert classify(429, {"Retry-After": "7"}, b"", 1, now).retry_after == 7


def _settings_for(fake, **overrides) -> Settings:
    values = dict(
        site_uuid=fake.site_uuid,
        publishable_key=fake.publishable_key,
        secret_key=fake.secret_key,
        api_url=fake.url,
        timeout=2,
        connect_timeout=1,
    )
    return Settings(**{**values, **overrides})


def test_post_reaches_the_fake_with_auth_site_and_headers(fake):
    """A real POST is accepted by the fake, which checks path, site_uuid, Basic auth and body."""
    outcome = post_events(_settings_for(fake), EVENTS)
    assert outcome.verdict is Verdict.DELIVERED and outcome.accepted == 2
    [request] = fake.requests
    assert request.query["site_uuid"] == fake.site_uuid
    assert request.headers["user-agent"].startswith("bento-tasks/")
    assert [e["email"] for e in fake.events] == ["a@example.com", "b@example.com"]


def test_wrong_key_is_a_configuration_fault(fake):
    """A 401 from bad credentials is classified CONFIG, not retried as transient."""
    outcome = post_events(_settings_for(fake, secret_key="wrong"), EVENTS)
    assert (outcome.verdict, outcome.status) == (Verdict.CONFIG, 401)


def test_connection_refused_is_retried_as_never_sent(fake):
    """A refused connection cannot have reached Bento: RETRY, and its detail never carries the secret key."""
    settings = _settings_for(fake)
    fake.stop()
    refused = post_events(settings, EVENTS)
    assert refused.verdict is Verdict.RETRY and refused.status is None
    assert settings.secret_key not in refused.detail


def test_read_timeout_is_unanswered(fake):
    """A server slower than BENTO_TIMEOUT had the request: UNANSWERED (Bento may have recorded it)."""
    fake.delay = 1.0
    outcome = post_events(_settings_for(fake, timeout=0.2), EVENTS)
    assert outcome.verdict is Verdict.UNANSWERED and "Timeout" in outcome.detail
    assert len(fake.events) == 2


@pytest.mark.parametrize("headers", [False, True], ids=["body trickles", "headers trickle"])
def test_a_trickling_answer_is_cut_off_at_the_deadline(fake, headers):
    """An answer sent a byte at a time (no single read times out) is cut off at connect + read timeout, in the
    body as in the headers: UNANSWERED, long before the trickle would end."""
    fake.trickle(20, headers=headers)
    settings = _settings_for(fake, timeout=1.0, connect_timeout=0.5)
    started = time.monotonic()
    outcome = post_events(settings, EVENTS)
    assert time.monotonic() - started < 10  # cut at 1.5 s, not after the 20 s trickle
    assert outcome.verdict is Verdict.UNANSWERED and "within 1.5s" in outcome.detail
    fake.trickle(0)
    assert post_events(settings, EVENTS).verdict is Verdict.DELIVERED  # the cut connection is not reused


def test_one_watchdog_thread_serves_every_post_and_cuts_the_late_one(fake):
    """Deadlines are kept by one thread per process, not a thread per POST: after 50 quick POSTs and a trickling one,
    one watchdog thread exists and it cut the trickle; finished POSTs do not pile up waiting for their time."""
    settings = _settings_for(fake, timeout=1.0, connect_timeout=0.5)
    for _ in range(50):
        assert post_events(settings, EVENTS).verdict is Verdict.DELIVERED
    fake.trickle(5)  # a byte every ~0.3 s: no read times out, only the 1.5 s deadline ends it
    outcome = post_events(settings, EVENTS)
    assert outcome.verdict is Verdict.UNANSWERED and "within 1.5s" in outcome.detail
    watchdogs = [t for t in threading.enumerate() if t.name == "bento-tasks-post-deadline"]
    assert len(watchdogs) == 1 and watchdogs[0].daemon
    assert len(client._watchdog._due) <= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the case under test
def test_a_forked_child_gets_a_watchdog_of_its_own(fake):
    """A pool child forked after the parent posted (Celery's prefork) still has its trickling POST cut off."""
    settings = _settings_for(fake, timeout=0.5, connect_timeout=0.5)
    assert post_events(settings, EVENTS).verdict is Verdict.DELIVERED  # the parent's watchdog thread runs
    fake.trickle(3)  # a byte every ~0.2 s: no read times out, only the 1 s deadline ends it
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if the deadline cut its POST; it never returns into pytest
        try:
            outcome = post_events(settings, EVENTS)
            os._exit(0 if outcome.verdict is Verdict.UNANSWERED and "within 1s" in outcome.detail else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_watchdog_outlives_a_deadline_it_could_not_cut(fake, caplog):
    """A deadline whose cut raises is logged, and the same watchdog thread still cuts the next trickling POST."""

    class Broken(client._Deadline):
        def expire(self) -> None:
            raise RuntimeError("cannot cut")

    with Broken(0.01):
        time.sleep(0.3)
    assert "could not cut off a POST" in caplog.text
    fake.trickle(5)
    outcome = post_events(_settings_for(fake, timeout=1.0, connect_timeout=0.5), EVENTS)
    assert outcome.verdict is Verdict.UNANSWERED and "within 1.5s" in outcome.detail


def test_the_cut_reaches_the_socket_under_a_tls_proxy_tunnel():
    """Through an https proxy urllib3 wraps TLS in an SSLTransport: the cut shuts down the socket underneath."""
    ours, peer = socket.socketpair()

    class Transport:  # what urllib3's SSLTransport exposes: the socket it wraps
        socket = ours

    class Connection:
        sock = Transport()

    client._cut(Connection())
    assert peer.recv(1) == b""  # our side shut down: the peer reads end-of-stream
    ours.close()
    peer.close()


def test_a_slow_but_complete_answer_within_the_deadline_is_delivered(fake):
    """A trickle that ends before the deadline is an ordinary answer."""
    fake.trickle(0.3)
    assert post_events(_settings_for(fake, timeout=2.0), EVENTS).verdict is Verdict.DELIVERED


def test_a_hang_up_after_bento_recorded_the_batch_is_unanswered(fake):
    """Bento records the batch and closes the connection without answering: UNANSWERED, never RETRY."""
    fake.hang_up()
    outcome = post_events(_settings_for(fake), EVENTS)
    assert outcome.verdict is Verdict.UNANSWERED and outcome.status is None
    assert len(fake.events) == 2


def test_tls_verification_stays_on():
    """The HTTP session verifies certificates; nothing in the package turns that off."""
    from bento_tasks import client

    assert client._get_session().verify is True
    assert "verify" not in Path(client.__file__).read_text().replace("verifies", "")


def test_connection_reset_is_unanswered(fake):
    """A server that reads the request and then resets the connection yields UNANSWERED, not an exception."""
    import socket
    import struct
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def reset_each_connection():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            conn.recv(1024)
            conn.close()

    threading.Thread(target=reset_each_connection, daemon=True).start()
    host, port = listener.getsockname()
    outcome = post_events(_settings_for(fake, api_url=f"http://{host}:{port}/api/v1"), EVENTS)
    listener.close()
    assert outcome.verdict is Verdict.UNANSWERED and outcome.status is None
    assert "Connection" in outcome.detail
