"""Celery tasks: thin glue between the buffer (Redis) and the client (HTTP).

All four are ``shared_task``s with explicit names, so a Django project's own Celery
app runs them; none of them creates an app.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from typing import Any

from celery import Task, shared_task

from . import conf
from .api import enqueue
from .buffer import get_buffer
from .client import Verdict, post_events
from .conf import get_settings
from .events import build_event, encode_event, mask_email, split_valid
from .exceptions import ConfigurationError, InvalidEvent
from .policy import backoff_delay, countdown, dispatch_room, rate_interval

logger = logging.getLogger(__name__)

# A reserved rate-limit slot this close is slept for; a later one goes back to the broker.
MAX_RATE_SLEEP = 2.0


class EventTask(Task):
    """Stamps and validates an event when ``.delay()`` is called, not when a worker gets to it.

    The event keeps the time it happened, and a bad one raises ``InvalidEvent`` in the caller
    (naming the field) instead of failing later, unseen, in a worker.
    """

    @functools.cached_property
    def _run_signature(self) -> inspect.Signature:
        return inspect.signature(self.run)  # ~20 µs a call, on every delay(): computed once

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        settings = get_settings()
        call = self._run_signature.bind(*(args or ()), **(kwargs or {})).arguments
        event = build_event(**call)
        raw = encode_event(event, settings.max_event_bytes)
        if settings.delivery != "redis":
            # BENTO_DELIVERY test modes bypass the broker too: the event is delivered before delay() returns.
            return enqueue(raw)
        call["date"] = event["date"]
        # Celery logs (and Flower shows) a task's arguments: the address is masked there.
        options.setdefault("kwargsrepr", repr({**call, "email": mask_email(call["email"], settings)}))
        return super().apply_async((), call, **options)


@shared_task(
    name="bento_tasks.send_event",
    base=EventTask,
    acks_late=True,
    reject_on_worker_lost=True,
    # Any failure (Redis down, a worker missing a setting) retries: an acked failure would lose the
    # event, which left the caller when .delay() returned.
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
    ignore_result=True,
)
def send_event(
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    date: Any = None,
) -> None:
    """Queue one event for Bento (the worker side of ``send_event.delay(...)``)."""
    settings = get_settings()
    event = build_event(type, email, fields, details, date)
    try:
        raw = encode_event(event, settings.max_event_bytes)
    except InvalidEvent as exc:
        # Only a message built around apply_async gets here; keep it where a human can see it.
        get_buffer().bury_event(json.dumps(event, default=repr).encode(), str(exc))
        logger.error("bento_tasks: invalid event for %s dead-lettered: %s", mask_email(email, settings), exc)
        return
    enqueue(raw)


@shared_task(name="bento_tasks.flush_events", ignore_result=True)
def flush_events() -> dict[str, int]:
    """Beat task: recover batches of dead workers, then claim and dispatch new ones.

    The events are validated by ``post_batch``, which reads them anyway: so the pool validates batches
    in parallel and each event crosses from Redis once, where validating here capped delivery at what
    one process can check (measured: 52,000 vs 70,000 events/s on 2 cores, see bench/RESULTS.md).
    """
    settings = get_settings()
    buffer = get_buffer()
    counts = {"recovered": 0, "dispatched": 0}
    for batch_id in buffer.recover_expired():
        post_batch.delay(batch_id)
        counts["recovered"] += 1
    # Batches waiting out a backoff still hold room (an outage must not claim the whole backlog),
    # but only batches about to be posted hold back a partial one (one failing batch must not stall
    # a quiet site's events for an hour).
    room = dispatch_room(settings, buffer.inflight_batches())
    busy = buffer.busy_batches()
    # A tick never runs past the next one, however deep the backlog.
    deadline = time.monotonic() + settings.flush_interval
    while room > 0 and time.monotonic() < deadline:
        # Requests are the scarce resource (about 100 a minute): while batches are on their way,
        # a partial batch waits to fill up; with none, it goes now.
        claimed = buffer.claim(full_only=busy > 0)
        if claimed is None:
            break
        post_batch.delay(claimed[0])
        counts["dispatched"] += 1
        busy += 1
        room -= 1
    if any(counts.values()):
        logger.info("bento_tasks: flush %s", counts)
    return counts


def _later(batch_id: str, attempt: int, wait: float) -> None:
    settings = get_settings()
    delay = countdown(settings, wait)
    new_id = get_buffer().handoff(batch_id, delay + settings.lease_seconds)
    if new_id:
        post_batch.apply_async((new_id,), {"attempt": attempt}, countdown=delay)


@shared_task(name="bento_tasks.post_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def post_batch(batch_id: str, attempt: int = 0) -> str:
    """Validate and POST one claimed batch; carries only the batch id, never events or secrets."""
    settings = get_settings()
    buffer = get_buffer()
    begin = buffer.begin(batch_id, rate_interval(settings), MAX_RATE_SLEEP)
    if begin.stale:
        return "stale"
    if not begin.reserved:
        _later(batch_id, attempt, begin.wait)
        return "deferred"
    events, rejected = split_valid(begin.events, settings.max_event_bytes)
    if rejected:
        buffer.reject(batch_id, rejected)
        logger.warning("bento_tasks: %d invalid event(s) dead-lettered, e.g. %s", len(rejected), rejected[0][1])
        if not events:
            return "rejected"
    if begin.wait:
        time.sleep(begin.wait)
    started = time.monotonic()
    outcome = post_events(settings, events)
    size = len(events)
    logger.info(
        "bento_tasks: POST batch=%s events=%d status=%s %.0fms results=%d failed=%d",
        batch_id,
        size,
        outcome.status or outcome.detail,
        (time.monotonic() - started) * 1000,
        outcome.accepted,
        outcome.failed,
    )
    verdict = outcome.verdict
    if verdict is Verdict.DELIVERED:
        buffer.ack(batch_id, size, outcome.accepted, outcome.failed)
        if outcome.failed:
            logger.warning(
                "bento_tasks: Bento reported %d of %d events failed in batch %s", outcome.failed, size, batch_id
            )
    elif verdict is Verdict.RATE_LIMITED:
        _, left = buffer.pause(outcome.retry_after or backoff_delay(settings, attempt))
        _later(batch_id, attempt, left)
    elif verdict is Verdict.CONFIG:
        started_pause, left = buffer.pause(settings.config_error_pause)
        if started_pause:
            logger.error(
                "bento_tasks: Bento answered %s: check BENTO_PUBLISHABLE_KEY, BENTO_SECRET_KEY, BENTO_SITE_UUID "
                "and BENTO_API_URL (%s); delivery paused %.0fs, events kept. Bento said: %s",
                outcome.status,
                settings.events_url,
                left,
                outcome.detail[:200],
            )
        _later(batch_id, attempt, left)
    elif verdict is Verdict.SPLIT:
        if size == 1:
            buffer.bury(batch_id, f"Bento refused the event: {outcome.detail}", outcome.status, attempt + 1)
        else:
            for half in buffer.split(batch_id) or ():
                post_batch.delay(half)
    elif attempt >= settings.max_retries:
        buried = buffer.bury(batch_id, f"retries exhausted: {outcome.detail}", outcome.status, attempt + 1)
        logger.error("bento_tasks: batch %s dead-lettered after %d attempts (%d events)", batch_id, attempt + 1, buried)
    else:
        if outcome.retry_after:
            # Bento said when to come back: hold every worker, not just this batch.
            buffer.pause(outcome.retry_after)
        _later(batch_id, attempt + 1, backoff_delay(settings, attempt, outcome.retry_after))
    return verdict.value


@shared_task(name="bento_tasks.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, int]:
    """Beat task (``BENTO_OUTBOX``): move the outbox rows the after-commit relay left behind to the Redis buffer.

    Its own task, not a step of the flush: a slow or unreachable database must not hold up delivery of
    what is already in Redis. A tick stops after BENTO_FLUSH_INTERVAL seconds; the next one goes on.
    """
    settings = get_settings()
    if not settings.outbox:
        return {"rows": 0, "pushed": 0}
    if conf._django_settings() is None:
        raise ConfigurationError(
            "BENTO_OUTBOX is on but Django is not configured: the outbox is a table of a Django project; "
            "set DJANGO_SETTINGS_MODULE for this worker, or turn BENTO_OUTBOX off"
        )
    from . import outbox  # imports Django: only where the outbox is on

    relayed = outbox.relay(max_seconds=settings.flush_interval)
    if relayed.rows:
        logger.info("bento_tasks: outbox relay: %d row(s), %d event(s) pushed", relayed.rows, relayed.pushed)
    return {"rows": relayed.rows, "pushed": relayed.pushed}
