"""Pin the behaviour of bento_tasks.testing.FakeBento, the fake Bento server.

The client's tests trust this fake to behave like Bento, so each rule it
enforces is pinned here, against plain ``requests`` calls.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3

from bento_tasks.testing import FakeBento
from bento_tasks.testing.rules import is_rfc3339

EVENT = {"type": "$signup", "email": "jesse@example.com"}


@pytest.fixture
def fake() -> Iterator[FakeBento]:
    """One FakeBento per test, with the default site and keys (shadows conftest's ``fake``)."""
    with FakeBento() as server:
        yield server


def post(
    fake: FakeBento,
    payload: Any = None,
    *,
    client: Any = requests,
    **kwargs: Any,
) -> requests.Response:
    """POST to the fake's batch endpoint with valid site and credentials unless overridden."""
    kwargs.setdefault("params", {"site_uuid": fake.site_uuid})
    kwargs.setdefault("auth", (fake.publishable_key, fake.secret_key))
    kwargs.setdefault("timeout", 5)
    if payload is not None:
        kwargs["json"] = payload
    return client.post(f"{fake.url}/batch/events", **kwargs)


def port_of(fake: FakeBento) -> int:
    return int(fake.url.split(":")[2].split("/")[0])


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events or [EVENT])}


def test_accepts_valid_batch_and_records_it(fake: FakeBento) -> None:
    """A valid batch gets 200 {"results": N, "failed": 0} and its events are recorded."""
    events = [
        EVENT,
        {
            "type": "$purchase",
            "email": "walter@example.com",
            "fields": {"first_name": "Walter", "vip": True, "age": 50, "note": None},
            "details": {"unique": {"key": "o-1"}, "cart": {"items": [{"sku": "A"}]}},
            "date": "2024-05-01T10:00:00Z",
        },
    ]
    response = post(fake, {"events": events})
    assert response.status_code == 200
    assert response.content == b'{"results": 2, "failed": 0}'
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert fake.events == events
    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/api/v1/batch/events", 200)
    assert request.query == {"site_uuid": "test-site"}
    assert request.headers["user-agent"].startswith("python-requests/")
    assert json.loads(request.body) == {"events": events}
    assert request.events == events
    assert request.response_body == response.content
    assert fake.count_status(200) == 1


def test_url_is_the_api_base(fake: FakeBento) -> None:
    """url is http://127.0.0.1:<port>/api/v1, what BENTO_API_URL should be."""
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.url.endswith("/api/v1")
    assert port_of(fake) > 0


def test_url_before_start_raises() -> None:
    """url raises RuntimeError before start(), when there is no port yet."""
    with pytest.raises(RuntimeError, match="start"):
        _ = FakeBento().url


def test_wrong_path_is_404(fake: FakeBento) -> None:
    """Any path other than /api/v1/batch/events is 404, and nothing is recorded as events."""
    response = requests.post(
        f"{fake.url}/batch/event",
        params={"site_uuid": fake.site_uuid},
        auth=(fake.publishable_key, fake.secret_key),
        json=batch(),
        timeout=5,
    )
    assert response.status_code == 404
    assert fake.events == []
    assert fake.count_status(404) == 1


def test_wrong_method_is_405(fake: FakeBento) -> None:
    """A non-POST request to the events path is 405 with Allow: POST."""
    response = requests.get(f"{fake.url}/batch/events", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# SKIP_HEADER stops urllib3 from adding its own User-Agent.
@pytest.mark.parametrize("agent", [urllib3.util.SKIP_HEADER, ""], ids=["missing", "empty"])
def test_missing_user_agent_is_403_html(fake: FakeBento, agent: str) -> None:
    """A request without a non-empty User-Agent is blocked: 403 with an HTML body."""
    response = post(fake, batch(), headers={"User-Agent": agent})
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert not fake.requests[0].headers.get("user-agent")
    assert fake.events == []


@pytest.mark.parametrize(
    "auth",
    [None, ("pub-key", "wrong"), ("wrong", "secret-key")],
    ids=["none", "bad-secret", "bad-publishable"],
)
def test_bad_credentials_are_401(fake: FakeBento, auth: tuple[str, str] | None) -> None:
    """Missing or wrong HTTP Basic credentials get 401 with a JSON error."""
    response = post(fake, batch(), auth=auth)
    assert response.status_code == 401
    assert "error" in response.json()
    assert fake.events == []


@pytest.mark.parametrize("params", [{}, {"site_uuid": "other-site"}], ids=["missing", "wrong"])
def test_wrong_site_is_401(fake: FakeBento, params: dict[str, str]) -> None:
    """A missing or foreign site_uuid gets 401."""
    response = post(fake, batch(), params=params)
    assert response.status_code == 401
    assert "site_uuid" in response.json()["error"]


def test_non_json_body_is_400(fake: FakeBento) -> None:
    """A body that is not JSON gets 400."""
    response = post(fake, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_nan_is_not_json(fake: FakeBento) -> None:
    """NaN, which Python's json.dumps emits but JSON lacks, gets 400."""
    body = b'{"events": [{"type": "t", "email": "a@b.c", "fields": {"x": NaN}}]}'
    response = post(fake, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_wrong_content_type_is_400(fake: FakeBento) -> None:
    """A JSON body sent without Content-Type application/json gets 400."""
    response = post(fake, data=json.dumps(batch()), headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert "Content-Type" in response.json()["error"]


@pytest.mark.parametrize("count", [0, 1001])
def test_event_count_out_of_bounds_is_400(fake: FakeBento, count: int) -> None:
    """A batch of 0 or more than 1000 events gets 400 naming the count."""
    response = post(fake, {"events": [EVENT] * count})
    assert response.status_code == 400
    assert str(count) in response.json()["error"]
    assert fake.events == []


def test_thousand_events_are_accepted(fake: FakeBento) -> None:
    """A batch of exactly 1000 events is accepted."""
    response = post(fake, {"events": [EVENT] * 1000})
    assert response.json() == {"results": 1000, "failed": 0}
    assert len(fake.events) == 1000


@pytest.mark.parametrize(
    "payload",
    [[EVENT], {"batch": [EVENT]}, {"events": EVENT}],
    ids=["list", "no-events-key", "events-not-list"],
)
def test_body_shape_is_checked(fake: FakeBento, payload: Any) -> None:
    """The body must be an object whose "events" is a list, else 400."""
    assert post(fake, payload).status_code == 400


@pytest.mark.parametrize("value", [{"plan": "pro"}, ["pro"]], ids=["object", "array"])
def test_nested_fields_value_is_400(fake: FakeBento, value: Any) -> None:
    """An object or array inside fields gets 400 naming the event index and field."""
    bad = {**EVENT, "fields": {"name": "Jesse", "plan": value}}
    response = post(fake, batch(EVENT, bad))
    assert response.status_code == 400
    assert "events[1].fields.plan" in response.json()["error"]
    assert fake.events == []


def test_unknown_event_key_is_400(fake: FakeBento) -> None:
    """An event key other than type, email, fields, details, date gets 400 naming it."""
    response = post(fake, batch({**EVENT, "name": "Jesse"}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "events[0]" in error
    assert "name" in error


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ("not an object", "events[0]"),
        ({"email": "a@example.com"}, "events[0].type"),
        ({"type": "", "email": "a@example.com"}, "events[0].type"),
        ({"type": "t"}, "events[0].email"),
        ({"type": "t", "email": "not-an-email"}, "events[0].email"),
        ({"type": "t", "email": 5}, "events[0].email"),
        ({**EVENT, "fields": ["a"]}, "events[0].fields"),
        ({**EVENT, "details": "x"}, "events[0].details"),
        ({**EVENT, "date": 1714557600}, "events[0].date"),
        ({**EVENT, "date": "yesterday"}, "events[0].date"),
        ({**EVENT, "date": "2026-12-01"}, "events[0].date"),
        ({**EVENT, "date": "2026-12-01 10:00:00"}, "events[0].date"),
        ({**EVENT, "date": "2026-12-01T10:00:00"}, "events[0].date"),
    ],
)
def test_bad_event_is_400_naming_field(fake: FakeBento, event: Any, field: str) -> None:
    """Each event rule refuses the batch with 400 naming the index and field."""
    response = post(fake, {"events": [event]})
    assert response.status_code == 400
    assert field in response.json()["error"]


@pytest.mark.parametrize(
    ("date", "valid"),
    [
        ("2024-02-29T23:59:59Z", True),
        ("2024-05-01t10:00:00.123456789z", True),
        ("2016-12-31T23:59:60Z", True),  # a leap second
        ("2024-05-01T10:00:00-23:59", True),
        ("2023-02-29T10:00:00Z", False),
        ("2024-04-31T10:00:00Z", False),
        ("2024-13-01T10:00:00Z", False),
        ("0000-01-01T10:00:00Z", False),
        ("2024-05-01T24:00:00Z", False),
        ("2024-05-01T10:60:00Z", False),
        ("2024-05-01T10:00:61Z", False),
        ("2024-05-01T10:00:00+24:00", False),
        ("2024-05-01T10:00:00+02:60", False),
        ("2024-05-01T10:00:00+0200", False),
    ],
)
def test_dates_are_checked_against_the_calendar_and_clock(date: str, valid: bool) -> None:
    """A date-time of the right shape must also be a real day, time and offset (leap second allowed)."""
    assert is_rfc3339(date) is valid


def test_fail_queue_then_success(fake: FakeBento) -> None:
    """fail(status, times) fails the next N requests without recording events, then accepts."""
    fake.fail(503, times=2)
    assert [post(fake, batch()).status_code for _ in range(3)] == [503, 503, 200]
    assert fake.events == [EVENT]
    assert fake.count_status(503) == 2
    assert [request.events for request in fake.requests] == [[], [], [EVENT]]


def test_fail_consumed_only_by_authenticated_requests(fake: FakeBento) -> None:
    """A request refused for auth does not use up a scripted failure."""
    fake.fail(500)
    assert post(fake, batch(), auth=("pub-key", "wrong")).status_code == 401
    assert post(fake, batch()).status_code == 500
    assert post(fake, batch()).status_code == 200


def test_scripted_429_carries_retry_after(fake: FakeBento) -> None:
    """fail(429, retry_after=...) sends the Retry-After header verbatim."""
    fake.fail(429, retry_after="7")
    response = post(fake, batch())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert "Retry-After" not in post(fake, batch()).headers


def test_fail_with_custom_body(fake: FakeBento) -> None:
    """fail(body=...) answers that body, typed JSON only when it parses as JSON."""
    fake.fail(502, body=b"<html>Bad Gateway</html>")
    fake.fail(200, body=b'{"results": 0, "failed": 1}')
    first, second = post(fake, batch()), post(fake, batch())
    assert (first.status_code, first.content) == (502, b"<html>Bad Gateway</html>")
    assert first.headers["Content-Type"].startswith("text/plain")
    assert second.json() == {"results": 0, "failed": 1}
    assert fake.events == []


def test_fail_for_window(fake: FakeBento) -> None:
    """fail_for(seconds) fails every request during the window, then service resumes."""
    fake.fail_for(0.3, status=503)
    assert post(fake, batch()).status_code == 503
    assert post(fake, batch()).status_code == 503
    time.sleep(0.35)
    assert post(fake, batch()).status_code == 200
    assert fake.events == [EVENT]


def test_reject_events_refuses_poison_batch_whole(fake: FakeBento) -> None:
    """reject_events refuses a batch holding a poison event; the batch without it passes."""
    poison = {"type": "$purchase", "email": "poison@example.com"}
    fake.reject_events(lambda event: event["email"].startswith("poison"))
    response = post(fake, batch(EVENT, poison))
    assert response.status_code == 422
    assert "events[1]" in response.json()["error"]
    assert fake.events == []
    assert post(fake, batch(EVENT)).status_code == 200
    assert fake.events == [EVENT]
    fake.reject_events(None)
    assert post(fake, batch(poison)).status_code == 200


def test_reject_events_with_a_500_plays_an_event_bento_cannot_take(fake: FakeBento) -> None:
    """reject_events(..., status=500) answers 500 for every batch holding the event, and records none of it."""
    fake.reject_events(lambda event: event["email"] == "poison@example.com", status=500)
    assert post(fake, batch(EVENT, {"type": "t", "email": "poison@example.com"})).status_code == 500
    assert post(fake, batch(EVENT)).status_code == 200
    assert fake.events == [EVENT]


def test_rate_limit_answers_429_with_retry_after() -> None:
    """Past rate_limit_per_minute requests in 60 s, the answer is 429 with Retry-After seconds."""
    with FakeBento(rate_limit_per_minute=3) as fake:
        assert post(fake, batch(), auth=("pub-key", "wrong")).status_code == 401  # takes no slot
        assert [post(fake, batch()).status_code for _ in range(3)] == [200, 200, 200]
        response = post(fake, batch())
        assert response.status_code == 429
        assert 59 <= int(response.headers["Retry-After"]) <= 60
        assert "rate limit" in response.json()["error"]
        assert len(fake.events) == 3


def test_delay_provokes_read_timeout_after_recording(fake: FakeBento) -> None:
    """delay holds the answer back past a client read timeout; the events were still recorded."""
    fake.delay = 1.0
    with pytest.raises(requests.ReadTimeout):
        post(fake, batch(), timeout=(5, 0.1))
    assert fake.events == [EVENT]


def test_trickle_sends_the_body_a_byte_at_a_time(fake: FakeBento) -> None:
    """trickle(s) sends headers at once and spreads the body over s seconds: no single read waits long, so a
    short read timeout never fires; the events were recorded first."""
    fake.trickle(0.6)
    started = time.monotonic()
    response = post(fake, batch(), timeout=(5, 0.3))
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200 and response.json() == {"results": 1, "failed": 0}
    assert fake.events == [EVENT]


def raw_post(fake: FakeBento) -> bytes:
    """A valid batch request as raw bytes, for tests that drive the connection by hand."""
    body = json.dumps(batch()).encode()
    return (
        f"POST /api/v1/batch/events?site_uuid={fake.site_uuid} HTTP/1.1\r\nHost: x\r\n"
        "User-Agent: t\r\nContent-Type: application/json\r\n"
        "Authorization: Basic cHViLWtleTpzZWNyZXQta2V5\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_trickle_of_headers_and_times(fake: FakeBento) -> None:
    """trickle(headers=True) spreads the status line and headers too; times=1 slows only the next answer."""
    fake.trickle(0.6, headers=True, times=1)
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=5) as sock:
        body = json.dumps(batch()).encode()
        request = (
            f"POST /api/v1/batch/events?site_uuid={fake.site_uuid} HTTP/1.1\r\nHost: x\r\n"
            "User-Agent: t\r\nContent-Type: application/json\r\n"
            "Authorization: Basic cHViLWtleTpzZWNyZXQta2V5\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(request + body)
        first = sock.recv(100)
        assert len(first) < 5  # a byte or so at a time, not the whole status line
    started = time.monotonic()
    assert post(fake, batch()).status_code == 200
    assert time.monotonic() - started < 0.5


def test_hang_up_records_then_answers_nothing(fake: FakeBento) -> None:
    """hang_up() records the next accepted batch and closes the connection without an answer; then back to normal."""
    fake.hang_up()
    with pytest.raises(requests.ConnectionError):
        post(fake, batch())
    assert fake.events == [EVENT] and fake.requests[0].status == 200
    assert post(fake, batch()).status_code == 200
    assert len(fake.events) == 2


def test_hang_up_every_time_until_stopped(fake: FakeBento) -> None:
    """hang_up(None) hangs up on every accepted batch; refused ones are still answered; hang_up(0) stops."""
    fake.hang_up(None)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            post(fake, batch())
    assert post(fake, batch(), auth=("pub-key", "wrong")).status_code == 401
    fake.hang_up(0)
    assert post(fake, batch()).status_code == 200
    assert len(fake.events) == 3


def settled(fake: FakeBento) -> list[str]:
    """Each request's ``answer``, once the fake is done with every request."""
    deadline = time.monotonic() + 5
    while any(not request.answer for request in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [request.answer for request in fake.requests]


def test_answer_says_sent_for_an_answer_written_to_a_connected_client(fake: FakeBento) -> None:
    """A request answered normally, accepted or refused, is recorded with answer "sent"."""
    assert post(fake, batch()).status_code == 200
    assert post(fake, batch(), auth=("pub-key", "wrong")).status_code == 401
    assert settled(fake) == ["sent", "sent"]


def test_answer_says_hung_up_when_the_fake_closed_without_answering(fake: FakeBento) -> None:
    """hang_up() and a failing on_request callback leave their recorded request with answer "hung_up"."""
    fake.hang_up()
    with pytest.raises(requests.ConnectionError):
        post(fake, batch())
    fake.on_request(lambda request: 1 / 0)
    with pytest.raises(requests.ConnectionError):
        post(fake, batch())
    assert settled(fake) == ["hung_up", "hung_up"]


def test_answer_says_client_gone_when_the_client_gave_up_first(fake: FakeBento) -> None:
    """A client that timed out before a delayed answer, or while an answer trickled, leaves "client_gone",
    though writing the delayed answer into the closed connection would have succeeded."""
    fake.delay = 0.5
    with pytest.raises(requests.ReadTimeout):
        post(fake, batch(), timeout=(5, 0.1))
    fake.delay = 0
    fake.trickle(3, headers=True, times=1)
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=5) as sock:
        sock.sendall(raw_post(fake))
        assert sock.recv(1) == b"H"  # the first byte of the trickle, then the client leaves
    assert settled(fake) == ["client_gone", "client_gone"]
    assert len(fake.events) == 2  # recorded all the same


def test_answer_sent_but_never_read_becomes_client_gone(fake: FakeBento) -> None:
    """An answer written in full that the client closes the connection without reading (a deadline firing just
    as it came) is corrected from "sent" to "client_gone"; one read before a clean close stays "sent"."""
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=5) as sock:
        sock.sendall(raw_post(fake))
        wait_for = time.monotonic() + 5
        while not (fake.requests and fake.requests[0].answer) and time.monotonic() < wait_for:
            time.sleep(0.01)
        assert fake.requests[0].answer == "sent"
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=5) as sock:
        sock.sendall(raw_post(fake))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(0.2)
    assert [request.answer for request in fake.requests] == ["client_gone", "sent"]


def test_heal_ends_scripted_faults_and_keeps_records(fake: FakeBento) -> None:
    """heal() drops queued failures, the outage, trickle, hang-ups and delay, but keeps requests, events and
    reject_events."""
    post(fake, batch())
    fake.fail(503, times=5)
    fake.fail_for(60)
    fake.hang_up(None)
    fake.trickle(30)
    fake.delay = 5
    fake.reject_events(lambda event: event["email"] == "poison@example.com")
    fake.heal()
    started = time.monotonic()
    assert post(fake, batch()).status_code == 200
    assert time.monotonic() - started < 1
    assert post(fake, batch({"type": "t", "email": "poison@example.com"})).status_code == 422
    assert len(fake.events) == 2 and len(fake.requests) == 3


def test_on_request_runs_while_the_client_waits(fake: FakeBento) -> None:
    """on_request(callback) sees each recorded request, with the client's address, before the answer is sent."""
    seen: list[tuple[int, tuple[str, int], bool]] = []
    answered = threading.Event()
    fake.on_request(lambda request: seen.append((request.status, request.client, answered.is_set())))
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=5) as sock:
        body = json.dumps(batch()).encode()
        sock.sendall(
            (
                f"POST /api/v1/batch/events?site_uuid={fake.site_uuid} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
                "Content-Type: application/json\r\nAuthorization: Basic cHViLWtleTpzZWNyZXQta2V5\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        answered.set()
        local = sock.getsockname()
    assert seen == [(200, (local[0], local[1]), False)]
    fake.on_request(None)
    post(fake, batch())
    assert len(seen) == 1


def test_wait_for_events_blocks_until_delivery(fake: FakeBento) -> None:
    """wait_for_events returns once enough events arrive from another thread."""
    sender = threading.Timer(0.1, post, args=(fake, batch(EVENT, EVENT)))
    sender.start()
    try:
        assert fake.wait_for_events(2, timeout=5) == [EVENT, EVENT]
    finally:
        sender.join()


def test_wait_for_events_timeout_explains(fake: FakeBento) -> None:
    """wait_for_events raises AssertionError naming the count, statuses and last refusal."""
    post(fake, batch(), auth=("pub-key", "wrong"))
    with pytest.raises(AssertionError, match=r"expected at least 1 events.*401.*credentials"):
        fake.wait_for_events(1, timeout=0.05)


def test_reset_forgets_everything(fake: FakeBento) -> None:
    """reset() forgets requests, events and scripted behaviour but keeps serving."""
    post(fake, batch())
    fake.fail(503, times=5)
    fake.fail_for(60)
    fake.reject_events(lambda event: True)
    fake.hang_up(None)
    fake.trickle(30)
    fake.on_request(lambda request: 1 / 0)
    fake.delay = 5
    fake.reset()
    assert (fake.events, fake.requests, fake.delay) == ([], [], 0.0)
    started = time.monotonic()
    assert post(fake, batch()).status_code == 200
    assert time.monotonic() - started < 1


def test_chunked_body_is_accepted(fake: FakeBento) -> None:
    """A chunked request body (no Content-Length) is read and accepted."""
    body = json.dumps(batch()).encode()
    chunks = iter([body[:10], body[10:]])
    response = post(fake, data=chunks, headers={"Content-Type": "application/json"})
    assert response.json() == {"results": 1, "failed": 0}
    assert "transfer-encoding" in fake.requests[0].headers


def test_expect_100_continue_is_answered_at_once(fake: FakeBento) -> None:
    """A client sending Expect: 100-continue gets the interim 100 before sending its body."""
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=2) as sock:
        sock.sendall(
            b"POST /api/v1/batch/events?site_uuid=test-site HTTP/1.1\r\n"
            b"Host: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100")


def raw_exchange(fake: FakeBento, head: bytes) -> bytes:
    """Send raw request bytes on a fresh connection and return what comes back before close."""
    with socket.create_connection(("127.0.0.1", port_of(fake)), timeout=2) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(4096), b""))


def test_malformed_content_length_is_400_and_closes(fake: FakeBento) -> None:
    """An unreadable Content-Length gets a recorded 400 and the connection is closed."""
    answer = raw_exchange(fake, b"POST /api/v1/batch/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Connection: close" in answer
    assert fake.count_status(400) == 1


def test_hang_up_mid_body_is_not_recorded(fake: FakeBento) -> None:
    """A client that hangs up before sending its whole body gets no answer and leaves no record."""
    answer = raw_exchange(fake, b"POST /api/v1/batch/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
    assert answer == b""
    assert fake.requests == []


def test_keep_alive_is_fast(fake: FakeBento) -> None:
    """Sequential POSTs on one keep-alive connection avoid the ~40 ms Nagle/delayed-ACK stall."""
    # A guard against the Nagle trap, not a benchmark: the stall makes each request >= 40 ms.
    requests_count = 200
    with requests.Session() as session:
        post(fake, batch(), client=session)  # open the connection
        started = time.perf_counter()
        for _ in range(requests_count):
            assert post(fake, batch(), client=session).status_code == 200
        mean = (time.perf_counter() - started) / requests_count
    assert mean < 0.020, f"mean {mean * 1000:.1f} ms per request"
    assert len(fake.events) == requests_count + 1


def test_stop_is_idempotent_and_cuts_keep_alive(fake: FakeBento) -> None:
    """stop() can be called twice and leaves no pooled connection answering."""
    with requests.Session() as session:
        assert post(fake, batch(), client=session).status_code == 200
        fake.stop()
        fake.stop()
        with pytest.raises(requests.ConnectionError):
            post(fake, batch(), client=session, timeout=2)
