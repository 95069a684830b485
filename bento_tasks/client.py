"""Bento's batch endpoint: the only module that speaks HTTP.

``build_post`` and ``classify`` are pure (payload in, decision out) so every status
code's handling is tested without a network; ``post_events`` is the thin I/O between.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import requests

from . import __version__
from .conf import Settings


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx: Bento has the events
    RETRY = "retry"  # timeouts, resets, 408, 5xx: try again later
    RATE_LIMITED = "rate_limited"  # 429: every worker waits
    SPLIT = "split"  # 400/413/422: something in the batch is refused; halve it to find what
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
            # A 2xx without Bento's {"results": N} is a proxy or maintenance page, not Bento: deleting
            # the batch on it could lose events, so it is retried (a duplicate at worst).
            return Outcome(Verdict.RETRY, status, detail=f"2xx without Bento's answer: {detail}")
        return Outcome(Verdict.DELIVERED, status, accepted=accepted, failed=failed, detail=detail)
    if status == 429:
        return Outcome(Verdict.RATE_LIMITED, status, retry_after, detail=detail)
    if status == 408 or status >= 500:
        return Outcome(Verdict.RETRY, status, retry_after, detail=detail)
    if status in (400, 413, 422):
        return Outcome(Verdict.SPLIT, status, detail=detail)
    return Outcome(Verdict.CONFIG, status, detail=detail)


_session: requests.Session | None = None
_session_pid: int | None = None


def _get_session() -> requests.Session:
    # One keep-alive session per process; a forked Celery child must not share its parent's sockets.
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session = requests.Session()
        _session_pid = os.getpid()
    return _session


def post_events(settings: Settings, events: Sequence[bytes]) -> Outcome:
    """POST one batch to Bento and classify the answer; network failures become RETRY."""
    post = build_post(settings, events)
    try:
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
        # The message names the URL and the error, never the Authorization header.
        return Outcome(Verdict.RETRY, detail=f"{type(exc).__name__}: {exc}"[:500])
    return classify(response.status_code, response.headers, response.content, len(events), time.time())
