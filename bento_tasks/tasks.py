"""Celery tasks: thin glue between the buffer (Redis), the client (HTTP) and the policy (decisions).

All four are ``shared_task``s with explicit names, so a Django project's own Celery
app runs them; none of them creates an app. ``post_batch`` takes a batch (BEGIN), POSTs it,
asks ``policy.decide`` what to do and has the buffer execute that in one script.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from . import (
    conf,
    worker,  # noqa: F401  (worker-start checks, for every app that runs these tasks)
)
from .api import enqueue
from .buffer import Buffer, Done, Expired, get_buffer, new_token
from .client import Verdict, post_events
from .conf import get_settings
from .events import build_event, encode_event, mask_email, split_valid
from .exceptions import BrokerUnavailable, BufferUnavailable, ConfigurationError, InvalidEvent
from .policy import Action, Health, Kind, Record, after_death, decide, decide_held, dispatch_room, rate_interval
from .telemetry import PostSample

if TYPE_CHECKING:
    from celery.result import AsyncResult

    # celery-types makes Task generic (parameters, result); Celery's class can be subscripted only from 5.7.
    _EventTaskBase = Task[..., None]
else:
    _EventTaskBase = Task

logger = logging.getLogger(__name__)

# A reserved rate-limit slot this close is slept for; a later one goes back to the broker.
MAX_RATE_SLEEP = 2.0
# Seconds between tries to record a POST's outcome while Redis refuses it.
FINISH_RETRY = 0.5
# kombu's visibility_timeout when the app sets none, and the margin added to it (see redelivery_horizon).
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
REDELIVERY_MARGIN = 600.0


class EventTask(_EventTaskBase):
    """Stamps and validates an event when ``.delay()`` is called, not when a worker gets to it.

    The event keeps the time it happened, and a bad one raises ``InvalidEvent`` in the caller
    (naming the field) instead of failing later, unseen, in a worker.
    """

    @functools.cached_property
    def _run_signature(self) -> inspect.Signature:
        return inspect.signature(self.run)  # ~20 µs a call, on every delay(): computed once

    # Narrower than Task.apply_async, so mypy's override check refuses it: Celery passes the options by
    # keyword (delay, signatures, retry), and in a BENTO_DELIVERY test mode there is no message, so no result.
    def apply_async(  # type: ignore[override]
        self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[None] | None:
        settings = get_settings()
        call = self._run_signature.bind(*(args or ()), **(kwargs or {})).arguments
        event = build_event(**call)
        raw = encode_event(event, settings.max_event_bytes)
        if settings.delivery != "redis":
            # BENTO_DELIVERY test modes bypass the broker too: the event is delivered before delay() returns.
            enqueue(raw)
            return None
        call["date"] = event["date"]
        # Celery logs (and Flower shows) a task's arguments: the address is masked there.
        options.setdefault("kwargsrepr", repr({**call, "email": mask_email(call["email"], settings)}))
        try:
            return super().apply_async((), call, **options)
        except OperationalError as exc:
            # kombu's error after its publish retries; as a ConnectionError it is caught like track()'s.
            raise BrokerUnavailable(
                f"could not send the event to the Celery broker, so it was not queued: {exc}. "
                "Retry later, or use track(), which needs only Redis."
            ) from exc

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, except that a retry the broker cannot take puts the message back.

        Celery acknowledges (drops) the message when it cannot publish the retry. With the buffer and the
        broker on one Redis, a restart fails the event's push and then its retry, and acknowledging once
        Redis is back would lose the event. Rejected with requeue, the message goes back on the queue, or
        stays in the broker's unacknowledged set (restored after its visibility_timeout) if Redis is still down.
        Only for a broker that cannot be reached: any other failure to publish (a message whose arguments no
        longer fit) would fail the same way at once, and requeued it would loop without a pause.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as rejected:
            reason, requeue = rejected.args  # Reject(reason, requeue); celery-types does not declare the attributes
            if requeue or not isinstance(reason, (ConnectionError, OperationalError)):
                raise
            logger.warning(
                "bento_tasks: could not publish the retry of send_event[%s] (%s): the message goes back to the broker",
                self.request.id,
                reason,
            )
            raise Reject(reason, requeue=True) from rejected


@shared_task(
    name="bento_tasks.send_event",
    base=EventTask,
    bind=True,
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
    self: _EventTaskBase,
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    date: Any = None,
) -> None:
    """Queue one event for Bento (the worker side of ``send_event.delay(...)``).

    Once per message: acks_late and reject_on_worker_lost mean a message whose worker died after queuing the
    event and before acknowledging comes back (at once, or after the broker's visibility_timeout), and must
    not queue it a second time.
    """
    settings = get_settings()
    event = build_event(type, email, fields, details, date)
    try:
        raw = encode_event(event, settings.max_event_bytes)
    except InvalidEvent as exc:
        # Only a message built around apply_async gets here; keep it where a human can see it.
        get_buffer().bury_event(json.dumps(event, default=repr).encode(), str(exc))
        get_buffer().record_dead_lettered(1)
        logger.error("bento_tasks: invalid event for %s dead-lettered: %s", mask_email(email, settings), exc)
        return
    message_id = self.request.id
    enqueue(raw, (message_id, redelivery_horizon(self.app)) if message_id else None)


def redelivery_horizon(app: Any) -> float:
    """Seconds within which a broker may deliver a message again: its visibility_timeout (kombu's Redis and
    SQS transports; an hour by default) plus the time kombu may take to notice (it checks every 100 s or so)."""
    options = app.conf.broker_transport_options or {}
    return float(options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)) + REDELIVERY_MARGIN


@shared_task(name="bento_tasks.flush_events", ignore_result=True)
def flush_events() -> dict[str, int]:
    """Beat task: recover batches of dead workers, dispatch deferred batches now due, claim and dispatch new ones.

    The events are validated by ``post_batch``, which reads them anyway: so the pool validates batches
    in parallel and each event crosses from Redis once, where validating here capped delivery at what
    one process can check (measured: 52,000 vs 70,000 events/s on 2 cores, see bench/RESULTS.md).
    """
    settings = get_settings()
    buffer = get_buffer()
    counts = {"recovered": 0, "released": 0, "dispatched": 0}
    buffer.record_depth()  # the admin chart's queue depth, once a tick
    for expired in buffer.expired():
        counts["recovered"] += _recover(buffer, expired)
    dispatched, deferred = buffer.batch_counts()
    for batch_id, wait in buffer.release_deferred(dispatch_room(settings, dispatched)):
        _dispatch(batch_id, wait)
        counts["released"] += 1
    # Deferred batches still hold room (an outage must not claim the whole backlog), but only batches
    # dispatched hold back a partial one (one failing batch must not stall a quiet site's events).
    # Held batches hold none: they wait for another batch to be accepted, which needs room to be sent.
    held = buffer.held_deferred() if deferred else 0  # no round trip while nothing waits (a healthy drain)
    room = dispatch_room(settings, dispatched + deferred - held)
    busy = dispatched + counts["released"]
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
    buffer.mark_flushed()  # status --check tells a missing beat by this
    if any(counts.values()):
        logger.info("bento_tasks: flush %s", counts)
    return counts


def _recover(buffer: Buffer, expired: Expired) -> int:
    """Re-dispatch a batch whose lease ran out; a death of its owner counts toward isolating it."""
    settings = get_settings()
    if expired.owner and not expired.record.held:
        action = after_death(expired.record, buffer.now(), settings)
    else:  # the message was lost (a flush or worker died before it ran), or a look at a held batch, which
        # posts nothing, was cut short: just send another
        action = Action(Kind.RETRY, expired.record)
    done = buffer.execute(expired.batch_id, expired.owner, action, recovering=True)
    if not done.owned:
        return 0  # its attempt finished meanwhile
    if expired.owner:
        _log_decision(expired.batch_id, "lease ran out while posting", action, done)
    if done.buried:
        buffer.record_dead_lettered(done.buried)
    for batch_id, wait in done.dispatch:
        _dispatch(batch_id, wait)
    return 1


def _dispatch(batch_id: str, wait: float) -> None:
    if wait > 0:
        post_batch.apply_async((batch_id,), countdown=wait)
    else:
        post_batch.delay(batch_id)


@shared_task(name="bento_tasks.post_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def post_batch(batch_id: str) -> str:
    """Validate and POST one claimed batch; carries only the batch id, never events or secrets.

    The attempt owns the batch from BEGIN on (a fencing token in Redis): a duplicated, redelivered
    or late message for the same batch, or one requeued after its worker died, finds it owned, or
    no longer dispatched, and does nothing.
    """
    settings = get_settings()
    # Before BEGIN: a worker without a key must not take the batch, or each lease that runs out
    # would count as a worker death and the events would end in the dead letters. Untaken, the
    # batch is re-sent when its lease runs out, and kept until the key is set.
    settings.require_keys()
    buffer = get_buffer()
    token = new_token()
    begin = buffer.begin(batch_id, token, rate_interval(settings), MAX_RATE_SLEEP)
    lease_ends = time.monotonic() + begin.wait + settings.lease_seconds
    if begin.state == "busy":
        logger.info(
            "bento_tasks: batch %s is being posted by another attempt (its lease has %.0fs left): "
            "this message does nothing",
            batch_id,
            begin.wait,
        )
        return "busy"
    if begin.state == "stale":
        logger.debug(
            "bento_tasks: batch %s is no longer dispatched (delivered, deferred or cut): nothing to do", batch_id
        )
        return "stale"
    if begin.state == "soon":
        post_batch.apply_async((batch_id,), countdown=begin.wait)
        return "deferred"
    if begin.state == "deferred":
        logger.debug("bento_tasks: batch %s waits %.1fs (paused or rate limited)", batch_id, begin.wait)
        return "deferred"
    assert begin.record is not None
    if begin.record.held:
        return _look_at_held(buffer, batch_id, token, begin.record, lease_ends)
    events, rejected = split_valid(begin.events, settings.max_event_bytes)
    if rejected:
        buffer.reject(batch_id, token, rejected)
        buffer.record_dead_lettered(len(rejected))
        logger.error("bento_tasks: %d invalid event(s) dead-lettered, e.g. %s", len(rejected), rejected[0][1])
        if not events:
            return "rejected"
    if begin.wait:
        time.sleep(begin.wait)
    started = time.monotonic()
    outcome = post_events(settings, events)
    seconds = time.monotonic() - started
    took = f"{seconds * 1000:.0f}ms"
    record = replace(begin.record, size=len(events))
    delivered = outcome.verdict is Verdict.DELIVERED
    action = decide(outcome, record, Health() if delivered else buffer.health(), settings)
    report = {"batch_size": len(events), "results": outcome.accepted, "failed": outcome.failed}
    done = _finish(buffer, batch_id, token, action, report, lease_ends)
    if delivered:
        logger.info(
            "bento_tasks: POST batch=%s events=%d status=%s %s results=%d failed=%d",
            batch_id,
            len(events),
            outcome.status,
            took,
            outcome.accepted,
            outcome.failed,
        )
        if not done.owned:
            logger.warning(
                "bento_tasks: Bento accepted batch %s after its lease ran out and another attempt took it over: "
                "its events may reach Bento twice",
                batch_id,
            )
        if outcome.failed:
            logger.warning(
                "bento_tasks: Bento reported %d of %d events failed in batch %s", outcome.failed, len(events), batch_id
            )
    else:
        what = f"POST events={len(events)} status={outcome.status or outcome.detail[:120]} {took}"
        _log_decision(batch_id, what, action, done)
    for piece, wait in done.dispatch:
        _dispatch(piece, wait)
    # Only the owner's ACK counts a delivery, in the series as in the stats.
    accepted = outcome.accepted if delivered and done.owned else 0
    buffer.record_post(
        PostSample(outcome.status, len(events), accepted, outcome.failed, seconds, action.kind.value, done.buried)
    )
    return outcome.verdict.value


def _look_at_held(buffer: Buffer, batch_id: str, token: str, record: Record, lease_ends: float) -> str:
    """A held batch came due: cut it if Bento accepts batches again, dead-letter it after the outage window, else
    hold it on. It is never posted whole."""
    action = decide_held(record, buffer.health(), get_settings())
    done = _finish(buffer, batch_id, token, action, {}, lease_ends)
    if action.kind is Kind.RETRY:
        logger.info("bento_tasks: batch=%s held (%d events): looked at in %.0fs", batch_id, record.size, done.wait)
    else:
        _log_decision(batch_id, f"held ({record.size} events)", action, done)
    if done.buried:
        buffer.record_dead_lettered(done.buried)
    for piece, wait in done.dispatch:
        _dispatch(piece, wait)
    return "held"


def _finish(
    buffer: Buffer, batch_id: str, token: str, action: Action, report: dict[str, int], lease_ends: float
) -> Done:
    """Record the outcome, retrying while the lease lasts if Redis is briefly unreachable or full.

    Giving up would leave the batch to lease recovery, which re-sends it: after a 2xx, a duplicate.
    """
    while True:
        try:
            return buffer.execute(batch_id, token, action, report=report)
        except BufferUnavailable as exc:
            if time.monotonic() + FINISH_RETRY >= lease_ends:
                raise
            logger.warning("bento_tasks: batch=%s: %s; trying again in %.1fs", batch_id, exc, FINISH_RETRY)
            time.sleep(FINISH_RETRY)


def _log_decision(batch_id: str, what: str, action: Action, done: Done) -> None:
    """One WARNING per attempt that did not deliver, saying what happens next; ERROR for dead letters and pauses."""
    if not done.owned:
        logger.warning("bento_tasks: batch=%s %s; another attempt took it over meanwhile: nothing done", batch_id, what)
        return
    if action.kind is Kind.BURY:
        logger.error(
            "bento_tasks: batch=%s %s: %d event(s) dead-lettered: %s", batch_id, what, done.buried, action.reason
        )
        return
    if action.kind is Kind.SPLIT:
        pieces = len(done.dispatch)
        logger.warning(
            "bento_tasks: batch=%s %s: cut into %d batches of up to %d events (%s)",
            batch_id,
            what,
            pieces,
            action.piece,
            action.reason,
        )
        return
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=done.wait)
    logger.warning(
        "bento_tasks: batch=%s %s: retry in %.1fs (at %s; %d failed attempt(s)): %s",
        batch_id,
        what,
        done.wait,
        at.isoformat(timespec="seconds"),
        action.record.attempts,
        action.reason[:300],
    )
    if done.pause_started:
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=done.pause_left)
        logger.error(
            "bento_tasks: delivery paused %.0fs (until %s): %s. Once fixed, `bento-tasks resume` "
            "sends the waiting batches at the next flush.",
            done.pause_left,
            until.isoformat(timespec="seconds"),
            action.reason[:300],
        )


@shared_task(name="bento_tasks.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, int]:
    """Beat task (``BENTO_OUTBOX``): move the outbox rows the after-commit relay left behind to the Redis buffer.

    Its own task, not a step of the flush: a slow or unreachable database must not hold up delivery of
    what is already in Redis. A tick stops after BENTO_FLUSH_INTERVAL seconds; the next one goes on.
    """
    settings = get_settings()
    if not settings.outbox:
        return {"rows": 0, "pushed": 0}
    if not conf.load_django():
        raise ConfigurationError(
            "BENTO_OUTBOX is on but Django is not configured: the outbox is a table of a Django project; "
            "set DJANGO_SETTINGS_MODULE for this worker, or turn BENTO_OUTBOX off"
        )
    from . import outbox  # imports Django: only where the outbox is on

    relayed = outbox.relay(max_seconds=settings.flush_interval)
    if relayed.rows:
        logger.info("bento_tasks: outbox relay: %d row(s), %d event(s) pushed", relayed.rows, relayed.pushed)
    return {"rows": relayed.rows, "pushed": relayed.pushed}
