"""Bento's batch endpoint: the only module that speaks HTTP.

``build_post`` and ``classify`` are pure (payload in, verdict out) so every status
code's handling is tested without a network; ``post_events`` is the thin I/O between.

Every POST has a wall-clock deadline (``Settings.post_deadline``: connect, send and the
whole answer). requests has only per-read timeouts, so an answer trickling in a byte at a
time would never trip them and could outlive the batch's lease; a watchdog thread shuts the
request's socket down at the deadline instead, which wakes the blocked read at once.
"""

from __future__ import annotations

import email.utils
import enum
import heapq
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from . import __version__
from .conf import Settings

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx with Bento's answer: Bento has the events
    RETRY = "retry"  # not sent (refused, connect timeout) or answered 408/5xx: Bento does not have them
    UNANSWERED = "unanswered"  # sent, but no answer (read timeout, deadline, hang-up): Bento may have them
    RATE_LIMITED = "rate_limited"  # 429: every worker waits
    REFUSED = "refused"  # 400/413/422: something in the batch is refused
    CONFIG = "config"  # 401/403/404 and other 3xx/4xx: our settings are wrong; keep events, pause


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None
    retry_after: float | None = None  # seconds, from Retry-After when Bento sent one
    accepted: int = 0
    failed: int = 0
    detail: str = ""  # Bento's answer or the network error, shortened, for logs and dead letters


@dataclass(frozen=True)
class Post:
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # Given to requests as Basic auth (which also keeps ~/.netrc from replacing it); never in a repr.
    auth: tuple[str, str] = field(repr=False, default=("", ""))


# A Retry-After longer than this is taken as this: a typo or a hostile header must not stop delivery for good.
MAX_RETRY_AFTER = 3600.0


def user_agent(settings: Settings) -> str:
    # Bento's firewall blocks requests without a User-Agent; its own SDKs send bento-<lang>-<site>.
    return f"bento-tasks/{__version__} (bento-python-{settings.site_uuid})"


def build_post(settings: Settings, events: Sequence[bytes]) -> Post:
    """The request for a batch of events already encoded as JSON (joined, never re-encoded).

    The one place the keys are needed: ConfigurationError names any that is missing, and why.
    """
    settings.require_keys()
    return Post(
        url=settings.events_url,
        params={"site_uuid": settings.site_uuid},
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent(settings),
        },
        body=b'{"events":[' + b",".join(events) + b"]}",
        auth=(settings.publishable_key, settings.secret_key),
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), if usable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def _shorten(body: bytes, limit: int = 500) -> str:
    return body[:limit].decode("utf-8", "replace")


def classify(status: int, headers: Mapping[str, str], body: bytes, events: int, now: float) -> Outcome:
    """Decide what a response from Bento means for the batch that was sent."""
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    detail = _shorten(body)
    if 200 <= status < 300:
        try:
            answer = json.loads(body)
            accepted, failed = int(answer["results"]), int(answer.get("failed", 0))
        except (ValueError, TypeError, KeyError, AttributeError):
            # A 2xx without Bento's {"results": N} is not Bento's answer: deleting the batch on it could lose
            # events, and Bento may have recorded them, so it is retried as a lost answer (copies bounded).
            return Outcome(Verdict.UNANSWERED, status, detail=f"2xx without Bento's answer: {detail}")
        return Outcome(Verdict.DELIVERED, status, accepted=accepted, failed=failed, detail=detail)
    if status == 429:
        return Outcome(Verdict.RATE_LIMITED, status, retry_after, detail=detail)
    if status == 408 or status >= 500:
        return Outcome(Verdict.RETRY, status, retry_after, detail=detail)
    if status in (400, 413, 422):
        return Outcome(Verdict.REFUSED, status, detail=detail)
    return Outcome(Verdict.CONFIG, status, detail=detail)


class _Deadline:
    """Cuts one POST off at a wall-clock deadline, in whatever phase it is (send, headers, body).

    The connection classes below report the connection a request uses; at the deadline the watchdog
    shuts its socket down (the blocked read then fails at once) unless the POST has finished.
    ``connected`` tells whether the request may have reached Bento: a failure before that point
    (refused, connect timeout, TLS handshake) certainly did not.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.connected = False
        self.finished = False
        self._connection: HTTPConnection | None = None
        self._lock = threading.Lock()

    def watch(self, connection: HTTPConnection, connected: bool) -> None:
        with self._lock:
            self._connection = connection
            self.connected = self.connected or connected
            if self.expired:  # the deadline passed while connecting
                _cut(connection)

    def expire(self) -> None:
        # Under the lock, so a POST that has just finished never has its (pooled) connection cut.
        with self._lock:
            if self.finished:
                return
            self.expired = True
            if self._connection is not None:
                _cut(self._connection)

    def __enter__(self) -> _Deadline:
        _watchdog.watch(self, time.monotonic() + self.seconds)
        _active.deadline = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _active.deadline = None
        with self._lock:
            self.finished = True
            self._connection = None  # the watchdog may hold this deadline a while: not the connection too


class _Watchdog:
    """One daemon thread per process that expires the POSTs' deadlines.

    Not a ``threading.Timer`` per POST: starting a thread for every batch cost about 5% of the
    drain rate (bench, 100,000 events). A finished POST stays in the heap until it reaches the
    top, where the next ``watch`` or wake-up drops it without waiting for its time.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()  # ties on the time never compare two _Deadlines
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline, at: float) -> None:
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name="bento-tasks-post-deadline", daemon=True)
                thread.start()
                self._thread = thread
            self._drop_finished()
            heapq.heappush(self._due, (at, next(self._order), deadline))
            if self._due[0][2] is deadline:  # due before the one the thread waits for
                self._changed.notify()

    def _drop_finished(self) -> None:
        while self._due and self._due[0][2].finished:
            heapq.heappop(self._due)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._drop_finished()
                if not self._due:
                    self._changed.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(min(wait, threading.TIMEOUT_MAX))
                    continue
                _, _, due = heapq.heappop(self._due)
            try:
                due.expire()
            except Exception:
                # One POST not cut off must not leave every later POST of this process without a deadline.
                logger.exception("bento_tasks: could not cut off a POST at its deadline")


_watchdog = _Watchdog()


def _new_watchdog_after_fork() -> None:
    # A forked child (Celery's prefork pool) has no copy of the parent's thread, and maybe a copy of a held lock.
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_watchdog_after_fork)


def _cut(connection: HTTPConnection) -> None:
    # urllib3 wraps TLS to an https Bento inside a TLS proxy tunnel in an SSLTransport over the real socket.
    sock = getattr(connection.sock, "socket", connection.sock)
    if not isinstance(sock, socket.socket):
        return
    try:
        # socket.socket's own shutdown, also for an SSLSocket: its override would tear down the TLS
        # state under the thread that is reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Active(threading.local):
    deadline: _Deadline | None = None


_active = _Active()


def _watch(connection: HTTPConnection, connected: bool) -> None:
    deadline = _active.deadline
    if deadline is not None:
        deadline.watch(connection, connected)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self, connected=True)

    def request(self, *args: Any, **kwargs: Any) -> None:
        # A kept-alive connection is already connected; a new plain-HTTP one connects inside request().
        _watch(self, connected=self.sock is not None)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self, connected=True)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self, connected=self.sock is not None)
        super().request(*args, **kwargs)


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections a ``_Deadline`` can cut (direct, or through an HTTP(S) proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # A SOCKS proxy brings pool classes of its own; through one only the per-read timeouts apply.
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


_session: requests.Session | None = None
_session_pid: int | None = None


def _get_session() -> requests.Session:
    # One keep-alive session per process; a forked Celery child must not share its parent's sockets.
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session = requests.Session()
        for prefix in ("https://", "http://"):
            _session.mount(prefix, _DeadlineAdapter())
        _session_pid = os.getpid()
    return _session


def post_events(settings: Settings, events: Sequence[bytes]) -> Outcome:
    """POST one batch to Bento within ``settings.post_deadline`` and classify the answer.

    Network failures become RETRY when the request cannot have reached Bento, else UNANSWERED.
    """
    post = build_post(settings, events)
    deadline = _Deadline(settings.post_deadline)
    try:
        with deadline:
            response = _get_session().post(
                post.url,
                params=post.params,
                data=post.body,
                headers=post.headers,
                auth=post.auth,
                timeout=(settings.connect_timeout, settings.timeout),
                allow_redirects=False,  # requests would turn a redirected POST into a GET
            )
    except requests.RequestException as exc:
        verdict = Verdict.UNANSWERED if deadline.connected else Verdict.RETRY
        # The message names the URL and the error, never the Authorization header.
        detail = _cut_off(deadline) if deadline.expired else f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(verdict, detail=detail)
    outcome = classify(response.status_code, response.headers, response.content, len(events), time.time())
    if deadline.expired and outcome.verdict is not Verdict.DELIVERED:
        # Cut off mid-headers, http.client takes what came as the whole answer. Only a complete
        # {"results": N} can be trusted then (no prefix of a JSON object is valid JSON).
        return Outcome(Verdict.UNANSWERED, outcome.status, detail=_cut_off(deadline))
    return outcome


def _cut_off(deadline: _Deadline) -> str:
    return f"no complete answer within {deadline.seconds:g}s (BENTO_CONNECT_TIMEOUT + BENTO_TIMEOUT): cut off"
