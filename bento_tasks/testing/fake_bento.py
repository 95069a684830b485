"""``FakeBento``: a fake of Bento's batch-events endpoint for tests.

``FakeBento`` is a real HTTP server on a loopback port that answers
``POST /api/v1/batch/events?site_uuid=SITE`` the way Bento documents it. It is a
real server, not a mock of ``requests``, so a test exercises the client's whole
HTTP stack: URL building, Basic auth, the ``User-Agent`` header, JSON encoding,
connection pooling and keep-alive, timeouts and retries.

Like ``rules``, it imports nothing from the rest of ``bento_tasks`` (only the
standard library), so it checks the client against Bento's contract rather
than against the client's own idea of it. Typical use::

    with FakeBento() as bento:
        # point the client at it: BENTO_API_URL=bento.url,
        # BENTO_SITE_UUID=bento.site_uuid, BENTO_PUBLISHABLE_KEY=bento.publishable_key,
        # BENTO_SECRET_KEY=bento.secret_key
        bento.fail(503, times=2)           # the first two batches meet an outage
        ...                                # run the code under test
        events = bento.wait_for_events(3)  # block until 3 events were accepted

A request is checked in the order Bento applies its rules: path (404), method
(405), ``User-Agent`` (403, HTML like Bento's firewall), ``site_uuid`` and Basic
auth (401), the per-minute rate limit (429 with ``Retry-After``), scripted
failures (``fail_for``, then ``fail``), the body (400), ``reject_events`` (422 by
default). Anything else is accepted: 200 with ``{"results": N, "failed": 0}``.

How the answer travels can be scripted too, for the faults a client must survive:
``delay`` holds every answer back, ``trickle`` sends answers a byte at a time,
``hang_up`` records a batch and closes the connection without answering, and
``on_request`` runs a callback while the client waits (e.g. to kill its worker).
Each recorded request says whether its answer reached a connected client
(``RecordedRequest.answer``), and ``heal()`` ends every scripted fault at once.
"""

from __future__ import annotations

import json
import math
import socket
import socketserver
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .rules import EVENTS_PATH, InvalidBody, basic_credentials, parse_batch

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+; type checkers ship typing_extensions

_MAX_LINE = 65536
# Bento's firewall answers a request without User-Agent with an HTML page, not JSON:
# clients must cope with a non-JSON error body.
_FORBIDDEN_HTML = (
    b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
    b"<body><h1>403 Forbidden</h1><p>Request blocked: a User-Agent header is required.</p>"
    b"</body></html>"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, with the status it answered.

    ``query`` and ``headers`` keep the last value of a repeated name; header
    names are lower-cased. ``events`` holds the events accepted from this
    request, empty when it was refused. ``response_body`` is what the fake
    answered, so a test can assert on the error a client was shown.

    ``answer`` says how the answer went, once the fake is done with the request
    (the entry in ``requests`` is then replaced): ``"sent"``, the whole answer was
    written to a client still connected; ``"hung_up"``, the fake closed the
    connection without answering (``hang_up``, a failing ``on_request``, ``stop``);
    ``"client_gone"``, the client closed the connection (a timeout, a deadline, a
    killed process) before the whole answer was written. Empty while answering.
    A recorded batch whose answer was not ``"sent"`` is one the client cannot know
    Bento has: the source of at-least-once duplicates.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    events: list[dict[str, Any]]
    received_at: float
    response_body: bytes = b""
    #: The client's (host, port): tells which process sent the request.
    client: tuple[str, int] = ("", 0)
    answer: str = ""


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    events: list[dict[str, Any]] = field(default_factory=list)
    hang_up: bool = False  # close the connection instead of answering
    trickle: tuple[float, bool] | None = None  # (seconds, headers too) to spread the answer over


class FakeBento:
    """A local HTTP server that behaves like Bento's batch events endpoint.

    The server runs in a daemon thread between ``start()`` and ``stop()`` (or
    inside a ``with`` block). All recorded state is guarded by one lock, so
    tests may read it while client threads or Celery workers post to it.

    ``delay`` (seconds, default 0) holds every answer back after the request
    was processed, to provoke client read timeouts. Like a slow real server,
    the fake has already recorded the events of a delayed request when the
    client gives up, so a client retry after a timeout yields duplicates: the
    at-least-once behaviour a client must tolerate.
    """

    def __init__(
        self,
        site_uuid: str = "test-site",
        publishable_key: str = "pub-key",
        secret_key: str = "secret-key",
        rate_limit_per_minute: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_window: float = 60.0,
    ) -> None:
        """Configure the fake; nothing listens until ``start()``.

        ``rate_limit_per_minute`` enables Bento's per-minute limit (it allows
        about 100 a minute on /batch/*); ``None`` means unlimited. ``rate_window``
        shrinks the "minute" (seconds) so a test can compress time: 100 per 6 s
        is Bento's limit ten times faster. ``host`` must be an IPv4 address;
        ``port`` 0 picks a free port, kept across a stop() and start().
        """
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1, or None")
        self.site_uuid = site_uuid
        self.publishable_key = publishable_key
        self.secret_key = secret_key
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_window = rate_window
        self.host = host
        self.delay: float = 0.0
        self._requested_port = port
        self._port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._events: list[dict[str, Any]] = []
        self._failures: deque[_Response] = deque()
        self._down_until = 0.0
        self._down_status = 503
        self._reject: tuple[Callable[[dict[str, Any]], bool], int] | None = None
        self._hang_ups: int | None = 0  # accepted batches still to hang up on; None: every one
        self._trickle: tuple[float, bool, int | None] | None = None  # seconds, headers too, answers left
        self._on_request: Callable[[RecordedRequest], None] | None = None
        # time.monotonic() of each authenticated request let past the rate limiter
        self._window: deque[float] = deque()

    def __repr__(self) -> str:
        # Never the secret key: a repr ends up in logs and assertion messages.
        where = self.url if self._port is not None else "not started"
        return f"FakeBento({where}, site_uuid={self.site_uuid!r})"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and serve in a daemon thread; returns ``self`` for chaining."""
        if self._server is not None:
            raise RuntimeError("FakeBento is already running")
        self._stopping = threading.Event()
        # A restarted fake comes back on the same port, as a recovering Bento would.
        server = _Server((self.host, self._port or self._requested_port), self)
        self._port = server.server_address[1]
        # A short poll interval keeps stop() fast: shutdown() waits for one poll.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"FakeBento:{self._port}",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and close the socket.

        Idempotent. Open connections are cut too, so a client's pooled
        connection cannot keep talking to a fake that is meant to be down.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API base URL to use as ``BENTO_API_URL``, e.g. ``http://127.0.0.1:5123/api/v1``."""
        if self._port is None:
            raise RuntimeError("FakeBento has no port yet: call start() or use it in a with block")
        return f"http://{self.host}:{self._port}/api/v1"

    # -- what was received -----------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event, in arrival order (a new list; the dicts are shared, don't mutate them)."""
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, accepted or refused, in arrival order (a new list)."""
        with self._lock:
            return list(self._requests)

    def count_status(self, status: int) -> int:
        """How many responses had ``status``."""
        with self._lock:
            return sum(1 for request in self._requests if request.status == status)

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` events were accepted; return all accepted events.

        Deliveries are asynchronous (Celery, retries), so tests wait for the
        outcome instead of sleeping. On timeout raise ``AssertionError`` that
        says what did arrive and the last refusal, which is usually the cause.
        """
        with self._changed:
            if self._changed.wait_for(lambda: len(self._events) >= count, timeout):
                return list(self._events)
            statuses = Counter(request.status for request in self._requests)
            refusals = [request for request in self._requests if request.status != 200]
            message = (
                f"FakeBento: expected at least {count} events within {timeout:g}s, "
                f"got {len(self._events)} from {len(self._requests)} requests "
                f"(statuses: {dict(sorted(statuses.items())) or 'none'})"
            )
            if refusals:
                last = refusals[-1]
                answer = last.response_body[:300].decode("utf-8", "replace")
                message += f"; last refusal: {last.status} {last.method} {last.path}: {answer}"
        raise AssertionError(message)

    # -- scripting -------------------------------------------------------------

    def fail(
        self,
        status: int,
        times: int = 1,
        retry_after: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """Make the next ``times`` requests that pass auth and the rate limit fail with ``status``.

        The events of a failed request are not recorded. ``retry_after`` is
        sent verbatim as the ``Retry-After`` header (seconds or an HTTP date).
        ``body`` replaces the default JSON error; it is labelled
        ``application/json`` if it parses as JSON, else ``text/plain``. Calls
        queue up: ``fail(503); fail(429, retry_after="2")`` scripts both, in order.
        """
        _check_status(status)
        if times < 1:
            raise ValueError("times must be at least 1")
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        if body is None:
            response = _json_error(status, f"scripted failure {status}", headers)
        else:
            response = _Response(status, body, _sniff_content_type(body), headers)
        with self._lock:
            self._failures.extend([response] * times)

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Fail every authenticated request with ``status`` for the next ``seconds`` ("Bento is down")."""
        _check_status(status)
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self._down_status = status

    def reject_events(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None,
        status: int = 422,
    ) -> None:
        """Refuse, whole, any valid batch holding an event for which ``predicate(event)`` is true.

        This plays Bento refusing a poison event: the answer is ``status`` with
        a JSON error naming the event's index, and no event of that batch is
        recorded. ``None`` stops rejecting.
        """
        _check_status(status)
        with self._lock:
            self._reject = None if predicate is None else (predicate, status)

    def trickle(self, seconds: float, *, headers: bool = False, times: int | None = None) -> None:
        """Send answers slowly: each answer's bytes spread evenly over ``seconds``, one byte at a time.

        The status line and headers go at once and the body trickles; with ``headers=True`` the
        whole answer does. No single read waits long, so a client's read timeout never fires: only
        a deadline on the whole request stops it. As with ``delay``, the events of an accepted batch
        are recorded before its answer starts. ``times`` limits this to the next N answers (None:
        every answer); ``trickle(0)`` stops.
        """
        if seconds < 0:
            raise ValueError("seconds must be 0 or more")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None")
        with self._lock:
            self._trickle = (seconds, headers, times) if seconds > 0 else None

    def hang_up(self, times: int | None = 1) -> None:
        """Record the next ``times`` accepted batches, then close each connection without answering.

        Their events are in ``events`` (Bento has them) but the client gets no answer, so it cannot
        know: the lost answer behind at-least-once delivery. ``None``: every accepted batch, until
        ``hang_up(0)`` or ``reset()``.
        """
        if times is not None and times < 0:
            raise ValueError("times must be 0 or more, or None")
        with self._lock:
            self._hang_ups = times

    def on_request(self, callback: Callable[[RecordedRequest], None] | None) -> None:
        """Call ``callback(request)`` in the server thread once each request is recorded, before it is answered.

        For tests that must act while the client waits for the answer, e.g. kill the worker that
        sent it (``request.client`` is its address). If the callback raises, the connection is closed
        without an answer. ``None`` removes it.
        """
        with self._lock:
            self._on_request = callback

    def heal(self) -> None:
        """End every scripted fault at once: queued ``fail``s, the ``fail_for`` outage, ``trickle``, ``hang_up``
        and ``delay``. Unlike ``reset()`` it keeps what was recorded, ``reject_events`` (a poison event stays
        poison) and ``on_request``."""
        with self._lock:
            self._failures.clear()
            self._down_until = 0.0
            self._hang_ups = 0
            self._trickle = None
        self.delay = 0.0

    def reset(self) -> None:
        """Forget recorded requests and events, scripted failures and answers, the rate window and ``delay``.

        Configuration given to ``__init__`` is kept, and the server keeps running.
        """
        with self._lock:
            self._requests.clear()
            self._events.clear()
            self._failures.clear()
            self._down_until = 0.0
            self._reject = None
            self._hang_ups = 0
            self._trickle = None
            self._on_request = None
            self._window.clear()
        self.delay = 0.0

    # -- request processing (called from server threads) -----------------------

    def _handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        framing_error: str | None,
        client: tuple[str, int],
    ) -> tuple[_Response, RecordedRequest]:
        """Decide the answer to one request, record it, run ``on_request``, then apply ``delay``."""
        received_at = time.time()
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if framing_error is not None:
            response = _json_error(400, framing_error)
        else:
            response = self._answer(method, parts.path, query, headers, body)
        request = RecordedRequest(
            method=method,
            path=parts.path,
            query=query,
            headers=headers,
            body=body,
            status=response.status,
            events=response.events,
            received_at=received_at,
            response_body=response.body,
            client=client,
        )
        with self._changed:
            self._requests.append(request)
            if request.events:
                self._events.extend(request.events)
                self._changed.notify_all()
            response = self._delivery(response)
            callback = self._on_request
        if callback is not None:
            try:
                callback(request)
            except Exception:
                self._settle(request, "hung_up")
                raise
        delay = self.delay
        if delay > 0:
            self._stopping.wait(delay)
        return response, request

    def _settle(self, request: RecordedRequest, answer: str) -> RecordedRequest:
        """Record how the answer to ``request`` went (see ``RecordedRequest.answer``); returns the new record."""
        settled = replace(request, answer=answer)
        with self._lock:
            # Searched from the end: the request was recorded moments ago. Gone after a reset().
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    self._requests[index] = settled
                    break
        return settled

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> _Response:
        if path != EVENTS_PATH:
            return _json_error(404, f"no route for {path!r}; events go to POST {EVENTS_PATH}")
        if method != "POST":
            return _json_error(405, f"{method} not allowed; use POST", (("Allow", "POST"),))
        if not headers.get("user-agent", "").strip():
            return _Response(403, _FORBIDDEN_HTML, "text/html; charset=utf-8")
        if query.get("site_uuid") != self.site_uuid:
            return _json_error(401, "unknown or missing site_uuid")
        if basic_credentials(headers.get("authorization", "")) != (
            self.publishable_key,
            self.secret_key,
        ):
            return _json_error(401, "invalid HTTP Basic credentials (publishable key:secret key)")
        with self._lock:
            refusal = self._rate_limited() or self._scripted_failure()
            reject = self._reject
        if refusal is not None:
            return refusal
        try:
            events = parse_batch(headers.get("content-type", ""), body)
        except InvalidBody as exc:
            return _json_error(400, str(exc))
        if reject is not None:
            predicate, status = reject
            for index, event in enumerate(events):
                if predicate(event):
                    return _json_error(status, f"events[{index}] was refused")
        payload = json.dumps({"results": len(events), "failed": 0}).encode()
        return _Response(200, payload, events=events)

    def _delivery(self, response: _Response) -> _Response:
        """Apply ``hang_up`` and ``trickle`` to an answer (caller holds the lock)."""
        if response.status == 200 and self._hang_ups != 0:
            if self._hang_ups is not None:
                self._hang_ups -= 1
            return replace(response, hang_up=True)
        if self._trickle is None:
            return response
        seconds, headers, times = self._trickle
        if times is not None:
            self._trickle = (seconds, headers, times - 1) if times > 1 else None
        return replace(response, trickle=(seconds, headers))

    def _rate_limited(self) -> _Response | None:
        """Admit the request into the sliding window, or answer 429 (caller holds the lock).

        A refused request takes no slot, so ``Retry-After`` is exactly when the
        oldest request leaves the window.
        """
        limit = self.rate_limit_per_minute
        if limit is None:
            return None
        now = time.monotonic()
        window = self._window
        while window and window[0] <= now - self.rate_window:
            window.popleft()
        if len(window) >= limit:
            wait = max(1, math.ceil(window[0] + self.rate_window - now))
            message = f"rate limit of {limit} requests per minute exceeded"
            return _json_error(429, message, (("Retry-After", str(wait)),))
        window.append(now)
        return None

    def _scripted_failure(self) -> _Response | None:
        """The ``fail_for`` outage, else the next queued ``fail`` (caller holds the lock)."""
        if time.monotonic() < self._down_until:
            return _json_error(self._down_status, "Bento is down (scripted by fail_for)")
        if self._failures:
            return self._failures.popleft()
        return None


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeBento and can cut open connections."""

    daemon_threads = True
    # The default backlog of 5 drops connections when many workers connect at
    # once, and a dropped SYN costs the client a one-second retransmit.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeBento) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, a DNS query that can
        # stall for seconds on some machines; the fake has no use for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection, waking handler threads blocked on it."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up, or stop() cutting a connection,
        # is normal in tests; only real errors deserve a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: read the request, let FakeBento decide, write the answer."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like Bento
    server_version = "FakeBento"
    # http.server writes headers and body separately. On a keep-alive
    # connection, Nagle's algorithm plus the client's delayed ACK then stall
    # every request by ~40 ms. No Nagle, and a buffered wfile so the whole
    # answer leaves in one send when handle_one_request flushes it.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def _serve(self) -> None:
        self._unconfirmed = None  # a new request on this connection: the client read the previous answer
        try:
            body, framing_error = self._read_body(), None
        except ValueError as exc:
            # The request's framing is broken, so the connection cannot be reused.
            body, framing_error = b"", f"malformed request body: {exc}"
            self.close_connection = True
        headers = {name.lower(): value for name, value in self.headers.items()}
        client = (str(self.client_address[0]), int(self.client_address[1]))
        fake = self.server.fake
        try:
            response, request = fake._handle(self.command, self.path, headers, body, framing_error, client)
        except Exception:
            self.close_connection = True  # an on_request callback failed: hang up
            raise
        if fake._stopping.is_set() or response.hang_up:
            self.close_connection = True
            fake._settle(request, "hung_up")
            return
        try:
            answer = self._write(response)
        except OSError:
            answer = "client_gone"  # the write failed: the client reset the connection
        if answer != "sent":
            self.close_connection = True
        settled = fake._settle(request, answer)
        self._unconfirmed = settled if answer == "sent" else None

    # The last answer "sent" on this connection, until the client's next request shows it read it.
    _unconfirmed: RecordedRequest | None = None

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ConnectionResetError:
            # A client that closes with data unread resets the connection: it never read that last answer
            # (the deadline cut it just as the answer came). A clean close, or a next request, means it did.
            if self._unconfirmed is not None:
                self.server.fake._settle(self._unconfirmed, "client_gone")
            raise

    def _write(self, response: _Response) -> str:
        """Write the answer, at once or trickled; returns how it went (``RecordedRequest.answer``).

        A write into a connection the client has closed still succeeds once (into the socket's buffer),
        so the client's end is peeked at before each write. A client that sent FIN may only have
        half-closed and still be reading: it gets the answer, and it counts as sent unless the
        connection is reset soon after (the client had closed it for good).
        """
        fake = self.server.fake
        head = self._head(response)
        payload = response.body if self.command != "HEAD" else b""
        if response.trickle is None:
            chunks, step = [head + payload], 0.0
        else:
            seconds, with_headers = response.trickle
            slow = head + payload if with_headers else payload
            step = seconds / max(len(slow), 1)
            chunks = [slow[i : i + 1] for i in range(len(slow))]
            if not with_headers:
                self._send(head)
        closed = False
        for chunk in chunks:
            if step and fake._stopping.wait(step):
                return "hung_up"
            peer = self._peer()
            if peer == "reset":
                return "client_gone"
            closed = closed or peer == "closed"
            self._send(chunk)
        if closed and self._reset_within(0.2):
            return "client_gone"
        return "sent"

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _peer(self) -> str:
        """The client's end, without reading from it: "open", "closed" (it sent FIN) or "reset"."""
        try:
            # After a FIN, recv() says end-of-file even once a reset came: only the socket's error tells.
            if self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return "reset"
            data = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return "open"  # connected, nothing sent: waiting for the answer
        except OSError:
            return "reset"
        return "closed" if data == b"" else "open"

    def _reset_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._peer() == "reset":
                return True
            time.sleep(0.01)
        return False

    def _head(self, response: _Response) -> bytes:
        """Status line and headers, built here so that they can be trickled like the body."""
        reason = self.responses.get(response.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {response.status} {reason}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # Every method reaches the same checks, so a wrong method gets Bento's 405
    # rather than http.server's 501.
    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def handle_expect_100(self) -> bool:
        # The buffered wfile would hold "100 Continue" back until the final
        # answer, and a client waiting for it (curl does) would stall.
        accepted = super().handle_expect_100()
        self.wfile.flush()
        return accepted

    def _read_body(self) -> bytes:
        """Read the body by Content-Length or chunked encoding.

        The body is always consumed, even when the answer will be an error, so
        the next request on a keep-alive connection starts at a clean boundary.
        Raises ValueError if the framing is malformed, and ConnectionResetError
        if the client hangs up mid-body (then nothing is recorded or answered).
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        size = int(length)
        if size < 0:
            raise ValueError(f"negative Content-Length {length!r}")
        return self._read_exactly(size)

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            line = self._read_line()
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size < 0:
                raise ValueError(f"negative chunk size in {line!r}")
            if size == 0:
                break
            chunks.append(self._read_exactly(size))
            self._read_line()  # the CRLF closing the chunk
        while self._read_line() not in (b"\r\n", b"\n"):
            pass  # trailer fields, unused
        return b"".join(chunks)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise ConnectionResetError("client closed the connection mid-body")
        return data

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE)
        if not line:
            raise ConnectionResetError("client closed the connection mid-body")
        return line

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: one stderr line per request would drown test output."""


def _json_error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps({"error": message}).encode(), headers=headers)


def _sniff_content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def _check_status(status: int) -> None:
    if not 200 <= status <= 599:
        raise ValueError(f"status must be a final HTTP status (200-599), got {status}")
