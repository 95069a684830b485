"""Prometheus metrics, read from Redis at scrape time (the ``prometheus`` extra: prometheus-client).

Every figure comes from the buffer when Prometheus asks, so any process can answer a scrape (the
Django view, ``bento-tasks metrics --port N``, a worker) and all of them give the same numbers.
To add them to a registry of your own: ``REGISTRY.register(BentoCollector())``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import telemetry
from .buffer import Buffer, get_buffer
from .conf import get_settings
from .exceptions import BufferUnavailable
from .status import snapshot

PREFIX = "bento_tasks_"


def _pause_left(paused_until: str | None, now: float) -> float:
    if not paused_until:
        return 0.0
    return max(0.0, dt.datetime.fromisoformat(paused_until).timestamp() - now)


def families(status: dict[str, Any], counters: dict[str, float], now: float) -> list[Metric]:
    """The metric families for one status snapshot and the operator counters (pure: tested without Redis)."""

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc, value=value)

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, value=value)

    pause_left = _pause_left(status.get("paused_until"), now)
    found: list[Metric] = [
        gauge("queued_events", "Events waiting in the Redis queue.", status["queued"]),
        gauge("in_flight_events", "Events in batches claimed and not yet delivered.", status["in_flight"]),
        gauge("in_flight_batches", "Batches claimed and not yet delivered.", status.get("batches_in_flight", 0)),
        gauge(
            "held_batches",
            "Batches held whole after BENTO_MAX_UNANSWERED unanswered attempts while Bento answered no one.",
            status.get("batches_held", 0),
        ),
        gauge("dead_letter_events", "Events in the dead-letter list.", status["dead"]),
        gauge("paused", "1 while delivery is paused (429 or a configuration fault), else 0.", int(pause_left > 0)),
        gauge("pause_remaining_seconds", "Seconds until a delivery pause ends (0: not paused).", pause_left),
        gauge(
            "oldest_queued_age_seconds",
            "Age of the oldest queued event, from its date (0: queue empty).",
            status.get("oldest_queued_age") or 0.0,
        ),
    ]
    if status.get("last_flush_age") is not None:  # absent until a flush ran: 0 would say one just did
        found.append(gauge("last_flush_age_seconds", "Seconds since the last flush ended.", status["last_flush_age"]))
    if status.get("outbox") is not None:
        found.append(gauge("outbox_rows", "Outbox rows waiting to be relayed to Redis.", status["outbox"]))
        found.append(
            gauge(
                "outbox_oldest_age_seconds",
                "Age of the oldest outbox row (0: none waiting).",
                status.get("outbox_oldest_age") or 0.0,
            )
        )
    found += [
        counter("events_delivered", "Events Bento recorded (its 'results').", status["delivered"]),
        counter("events_failed", "Events Bento reported failed in an accepted batch.", status["failed"]),
        counter("batches_delivered", "Batches Bento accepted.", status.get("batches_delivered", 0)),
        counter(
            "unanswered_posts",
            "POSTs sent without an answer coming back (Bento may have recorded the batch: it is retried).",
            status.get("unanswered", 0),
        ),
        counter(
            "worker_deaths", "Attempts whose worker died while posting (lease ran out).", status.get("worker_deaths", 0)
        ),
        counter(
            "retries",
            "POSTs whose batch is posted again later (5xx, timeouts, 429, auth faults).",
            counters.get("retries", 0),
        ),
        counter(
            "splits",
            "Batches cut into pieces: refused (400/413/422), or isolated after repeated failures.",
            counters.get("splits", 0),
        ),
        counter("events_dead_lettered", "Events moved to the dead-letter list.", counters.get("dead_lettered", 0)),
    ]
    posts = CounterMetricFamily(
        PREFIX + "posts", "POSTs to Bento by status class (429 apart; error: no HTTP answer).", labels=["status_class"]
    )
    for cls in telemetry.STATUS_CLASSES:
        posts.add_metric([cls], counters.get(f"posts:{cls}", 0))
    found.append(posts)
    cumulative, buckets = 0.0, []
    for bound in telemetry.DURATION_BUCKETS:
        label = telemetry.bucket_label(bound)
        cumulative += counters.get(f"duration_bucket:{label}", 0)
        buckets.append((label, cumulative))
    found.append(
        HistogramMetricFamily(
            PREFIX + "post_duration_seconds",
            "Wall time of POSTs to Bento.",
            buckets=buckets,
            sum_value=counters.get("duration_sum", 0.0),
        )
    )
    return found


class BentoCollector(Collector):
    """A prometheus-client collector reading the buffer at each scrape."""

    def __init__(self, buffer: Buffer | None = None) -> None:
        self._buffer = buffer

    def collect(self) -> Iterator[Metric]:
        buffer = self._buffer or get_buffer()
        yield from families(snapshot(buffer), buffer.counters(), time.time())


def exposition(buffer: Buffer | None = None) -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and its content type. Raises BufferUnavailable."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BentoCollector(buffer))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``GET /metrics``; with BENTO_METRICS_TOKEN set, only for ``Authorization: Bearer <token>``."""
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"bento-tasks serves /metrics only\n"]
    token = get_settings().metrics_token
    if token and not bearer_matches(environ.get("HTTP_AUTHORIZATION"), token):
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
        return [b"send Authorization: Bearer <BENTO_METRICS_TOKEN>\n"]
    try:
        body, content_type = exposition()
    except BufferUnavailable as exc:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{exc}\n".encode()]
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """One line per scrape would drown the terminal."""


def serve(host: str, port: int) -> None:
    """Serve ``/metrics`` until interrupted (``bento-tasks metrics``)."""
    get_settings()  # a missing setting is named now, not at the first scrape
    with make_server(host, port, wsgi_app, handler_class=_QuietHandler) as server:
        print(f"serving bento-tasks metrics on http://{host}:{server.server_port}/metrics", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
