"""Delivery decisions and retry timing: pure functions, tested as tables without Redis, HTTP or a clock.

``decide`` maps what one POST got (an ``Outcome``), the batch's attempt record (``Record``, kept in
Redis beside the batch) and Bento's recent health (``Health``) to one ``Action``; ``after_death``
does the same for an attempt whose worker died (or stalled past its lease). ``tasks.py`` executes
the action with one buffer call.

The rules, in words:

- 2xx: acknowledge. 429: pause every worker (Retry-After, else backoff). 401/403/404: pause for
  BENTO_CONFIG_ERROR_PAUSE, keep the events.
- 400/413/422: halve the batch; a single event is dead-lettered with Bento's answer. But when
  ``SAME_REFUSALS`` different single events in a row got the very same answer, with nothing
  accepted in between, the answer is about the request, not the events: pause like a
  configuration fault instead of dead-lettering the backlog one event at a time.
- Isolation by evidence: a batch that fails (5xx, refused connections, timeouts) while Bento
  accepts other batches claimed no earlier is halved after BENTO_ISOLATE_AFTER such failures; a
  single event is dead-lettered only if Bento also accepted something since its previous failure.
  During an outage nothing is accepted, so nothing is split or dead-lettered until BENTO_MAX_RETRIES.
- Copies are bounded: an attempt that may have reached Bento without an answer (unanswered) or
  whose worker died counts toward BENTO_MAX_UNANSWERED / BENTO_MAX_WORKER_DEATHS; pieces inherit
  both. At a limit the batch is no longer re-sent whole: a worker death cuts it into pieces (then
  singles, then the dead letters), an unanswered attempt does the same while Bento accepts other
  batches. Cutting into pieces of ceil(sqrt(BENTO_BATCH_SIZE)) and then single events, not halves,
  means at most two re-sends along the way (ten for halving 1000).
- An outage of hangs (``SILENT_OUTAGE`` attempts in a row unanswered, nothing accepted) is an outage,
  not a bad batch: every worker pauses, then one attempt at a time probes Bento (BEGIN's probe).
  A batch at BENTO_MAX_UNANSWERED with nothing accepted is *held*: kept whole and never sent whole
  again. ``decide_held`` runs instead of its POST when it comes due: once Bento has accepted another
  batch it is cut into pieces (the same two cuts), and only after ``outage_window`` (the time
  BENTO_MAX_RETRIES retries take at least, 84 minutes with the defaults) is it dead-lettered.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, replace

from .client import Outcome, Verdict
from .conf import Settings

#: Different single events refused with the same status and answer, nothing accepted in between,
#: after which the next refusal pauses delivery instead of dead-lettering.
SAME_REFUSALS = 3
#: Attempts in a row that got no answer, nothing accepted in between, after which Bento is taken to be
#: down rather than the batches bad: delivery pauses, then one attempt at a time probes it.
SILENT_OUTAGE = 3
#: The longest wait ever held as a Celery countdown; longer ones wait in Redis (see ``horizon``).
MAX_COUNTDOWN = 300.0

# What each kind of dead-letter reason written here contains: operators replay by these texts
# (`dead replay --reason`, the admin's reason filters), so every reason below is built from one.
EXHAUSTED = "retries exhausted"
UNANSWERED = "unanswered"
WORKER_DIED = "worker died"
ISOLATED = "while accepting other batches"
REFUSED = "Bento refused the event"
#: Every kind of reason ``decide`` and ``after_death`` dead-letter events with.
BURY_REASONS = (EXHAUSTED, UNANSWERED, WORKER_DIED, ISOLATED, REFUSED)


@dataclass(frozen=True)
class Record:
    """A batch's attempt record (Redis hash ``meta:<id>``); times are Redis clock seconds."""

    size: int
    created: float  # when the batch was claimed, or cut from a bigger one
    attempts: int = 0  # failed attempts of this batch: backoff and BENTO_MAX_RETRIES; a piece starts at 0
    isolated: int = 0  # failed attempts while Bento accepted batches claimed no earlier than this one
    unanswered: int = 0  # attempts that may have reached Bento without an answer; pieces inherit it
    deaths: int = 0  # attempts whose worker died or lost its lease while posting; pieces inherit it
    failed_at: float | None = None  # the previous failure
    first_failure: float | None = None  # the first failure of these events; pieces inherit it
    last_status: int | None = None
    last_detail: str = ""
    held: bool = False  # sent BENTO_MAX_UNANSWERED times while Bento answered no one: never sent whole again
    cuts: int = 0  # times these events were cut at a copy limit (each cut is one more send); pieces inherit it


@dataclass(frozen=True)
class Health:
    """What the buffer knows about Bento as a whole, read when a POST failed."""

    now: float = 0.0  # Redis clock
    accepted_at: float | None = None  # when Bento last accepted any batch
    refusal: str | None = None  # the answer of the current run of refused single events...
    refusals: int = 0  # ...and how many different events got it, with nothing accepted since
    silent: int = 0  # attempts that got no answer since Bento last accepted a batch


class Kind(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    SPLIT = "split"
    BURY = "bury"


@dataclass(frozen=True)
class Action:
    """What to do with the batch; ``record`` is what to store (RETRY) or what pieces inherit (SPLIT)."""

    kind: Kind
    record: Record
    delay: float = 0.0  # RETRY: seconds until the batch may be posted again
    pause: float = 0.0  # RETRY: also hold every worker this long (429, Retry-After, a configuration fault)
    piece: int = 0  # SPLIT: events per piece
    reason: str = ""  # BURY: the dead letters' reason; RETRY/SPLIT: why, for the log
    refusal: str | None = None  # BURY of a refused single: the answer, extending the run of refusals
    unanswered: int = 0  # to add to the `unanswered` counter in status
    deaths: int = 0  # to add to the `worker_deaths` counter in status


def decide(
    outcome: Outcome, record: Record, health: Health, settings: Settings, rng: random.Random | None = None
) -> Action:
    """What to do after one POST. ``health`` is consulted only when it failed."""
    verdict = outcome.verdict
    if verdict is Verdict.DELIVERED:
        return Action(Kind.ACK, record)
    if verdict is Verdict.RATE_LIMITED:
        wait = outcome.retry_after if outcome.retry_after is not None else backoff_delay(settings, 0, rng=rng)
        return Action(Kind.RETRY, record, delay=wait, pause=wait, reason="Bento answered 429 (rate limited)")
    if verdict is Verdict.CONFIG:
        pause = settings.config_error_pause
        reason = (
            f"Bento answered {outcome.status}: check BENTO_PUBLISHABLE_KEY, BENTO_SECRET_KEY, BENTO_SITE_UUID "
            f"and BENTO_API_URL ({settings.events_url}); events kept"
        )
        return Action(Kind.RETRY, record, delay=pause, pause=pause, reason=reason)
    if verdict is Verdict.REFUSED:
        return _refused(outcome, record, health, settings)
    failed = _failed(outcome, record, health)
    if verdict is Verdict.UNANSWERED:
        failed = replace(failed, unanswered=failed.unanswered + 1)
        # Bento may have these events already: wait long before sending them again.
        wait = max(backoff_delay(settings, failed.attempts - 1, rng=rng), backoff_delay(settings, 64, rng=rng))
        silent = health.silent + 1
        down = silent >= SILENT_OUTAGE
        # Bento answers no one: hold every worker, after which one attempt at a time probes it (BEGIN).
        pause = wait if down else 0.0
        reason = outcome.detail
        if down:
            reason = f"{silent} attempts in a row got no answer, nothing accepted: Bento looks down ({reason})"
        if _at_copy_limit(failed, settings):
            # Only an acceptance since this batch's previous send tells a batch Bento chokes on from an outage
            # that began after a neighbour's last accepted batch.
            fresh = _accepted_since_last_send(record, health)
            if fresh and record.size > 1:
                reason = f"no answer {failed.unanswered} times while Bento accepted other batches"
                return _isolate(failed, settings, reason, unanswered=1)
            if fresh or not _may_hold(failed, health.now, settings):
                return Action(Kind.BURY, failed, reason=_unanswered_reason(failed, outcome.detail), unanswered=1)
            held = replace(failed, held=True)
            reason = (
                f"no answer {failed.unanswered} times, nothing accepted meanwhile: held, not sent whole again, until "
                f"Bento accepts another batch ({reason})"
            )
            return Action(Kind.RETRY, held, delay=wait, pause=pause, reason=reason, unanswered=1)
        if failed.attempts > settings.max_retries:
            return _exhausted(failed, outcome, unanswered=1)
        return Action(Kind.RETRY, failed, delay=wait, pause=pause, reason=reason, unanswered=1)
    if failed.isolated >= settings.isolate_after:
        if record.size > 1:
            reason = f"failed {failed.isolated} times while Bento accepted other batches"
            return Action(Kind.SPLIT, failed, piece=-(-record.size // 2), reason=reason)
        # One event is dead-lettered only on fresh evidence: an outage that began after a neighbour's
        # last accepted batch must not bury a quiet site's single events.
        if _accepted_since_last_send(record, health):
            reason = f"Bento failed this event {failed.isolated} times {ISOLATED}: {outcome.detail}"
            return Action(Kind.BURY, failed, reason=reason)
    if failed.attempts > settings.max_retries:
        return _exhausted(failed, outcome)
    return Action(
        Kind.RETRY,
        failed,
        delay=backoff_delay(settings, failed.attempts - 1, outcome.retry_after, rng=rng),
        # Bento said when to come back: hold every worker, not just this batch.
        pause=outcome.retry_after or 0.0,
        reason=outcome.detail,
    )


def after_death(record: Record, now: float, settings: Settings) -> Action:
    """What to do with a batch whose lease ran out while an attempt owned it (its worker died or stalled)."""
    detail = f"the {WORKER_DIED} (or stalled past the batch's lease) while posting it"
    dead = replace(
        record,
        attempts=record.attempts + 1,
        deaths=record.deaths + 1,
        failed_at=now,
        first_failure=record.first_failure or now,
        last_status=None,
        last_detail=detail,
    )
    if _at_copy_limit(dead, settings):
        if record.size > 1:
            return _isolate(dead, settings, f"{dead.deaths} worker deaths while posting it", deaths=1)
        return Action(Kind.BURY, dead, reason=f"a {WORKER_DIED} while posting this event {dead.deaths} times", deaths=1)
    if dead.attempts > settings.max_retries:
        return Action(Kind.BURY, dead, reason=f"{EXHAUSTED}: {detail}", deaths=1)
    return Action(Kind.RETRY, dead, reason=detail, deaths=1)


def decide_held(record: Record, health: Health, settings: Settings, rng: random.Random | None = None) -> Action:
    """What to do with a held batch that comes due, instead of posting it.

    Bento accepted a batch since this one was last sent: it answers again, so the batch is cut into
    pieces (a single event goes once more on its own). Else it waits on, until ``outage_window``
    after its first failure (as a batch failing with 5xx answers retries for that long): then it is
    dead-lettered.
    """
    if _accepted_since_last_send(record, health):
        reason = f"held after {record.unanswered} unanswered attempts; Bento accepts batches again"
        return _isolate(replace(record, held=False), settings, reason)
    if not _may_hold(record, health.now, settings):
        return Action(Kind.BURY, record, reason=_unanswered_reason(record, record.last_detail))
    wait = backoff_delay(settings, 64, rng=rng)
    return Action(Kind.RETRY, record, delay=wait, reason="held until Bento accepts another batch")


def outage_window(settings: Settings) -> float:
    """Seconds BENTO_MAX_RETRIES retries take at the least (every jitter shortest): 84 minutes with the defaults.

    An outage this long dead-letters nothing, whether Bento fails, refuses connections or never answers.
    """
    return sum(_backoff_step(settings, attempt) / 2 for attempt in range(settings.max_retries))


def pieces_for_isolation(size: int, settings: Settings) -> int:
    """Events per piece when a batch that may have left copies in Bento is cut: sqrt of a full batch, then 1."""
    piece = math.isqrt(settings.batch_size - 1) + 1
    return piece if size > piece else 1


def _refused(outcome: Outcome, record: Record, health: Health, settings: Settings) -> Action:
    answer = f"{outcome.status} {outcome.detail}"
    if health.refusal == answer and health.refusals >= SAME_REFUSALS:
        pause = settings.config_error_pause
        reason = (
            f"Bento gave {health.refusals} different events in a row the same answer ({answer[:200]}), nothing "
            "accepted in between: that is about the request, not the events; events kept"
        )
        return Action(Kind.RETRY, record, delay=pause, pause=pause, reason=reason)
    if record.size > 1:
        return Action(
            Kind.SPLIT, record, piece=-(-record.size // 2), reason=f"Bento refused the batch ({answer[:200]})"
        )
    failed = replace(record, last_status=outcome.status, last_detail=outcome.detail)
    return Action(Kind.BURY, failed, reason=f"{REFUSED}: {outcome.detail}", refusal=answer)


def _failed(outcome: Outcome, record: Record, health: Health) -> Record:
    # Evidence that the batch, not Bento, is the problem: Bento accepted a batch claimed no earlier.
    evident = health.accepted_at is not None and health.accepted_at > record.created
    return replace(
        record,
        attempts=record.attempts + 1,
        isolated=record.isolated + 1 if evident else 0,
        failed_at=health.now,
        first_failure=record.first_failure or health.now,
        last_status=outcome.status,
        last_detail=outcome.detail,
    )


def _accepted_since_last_send(record: Record, health: Health) -> bool:
    """Fresh evidence that Bento answers: it accepted a batch after this one was last sent (or claimed)."""
    return health.accepted_at is not None and health.accepted_at > (record.failed_at or record.created)


def _at_copy_limit(record: Record, settings: Settings) -> bool:
    return record.unanswered >= settings.max_unanswered or record.deaths >= settings.max_worker_deaths


def _may_hold(record: Record, now: float, settings: Settings) -> bool:
    """A batch at its copy limit may wait for Bento to come back: within the outage window, and only if its
    events were cut fewer than two times (its release is a cut: two cuts, two sends more, is the copy bound)."""
    first = record.first_failure if record.first_failure is not None else now
    return record.cuts < 2 and now - first < outage_window(settings)


def _unanswered_reason(record: Record, detail: str) -> str:
    return (
        f"{UNANSWERED}: Bento did not answer {record.unanswered} times (it may have recorded these events that "
        f"many times): {detail}"
    )


def _isolate(record: Record, settings: Settings, why: str, unanswered: int = 0, deaths: int = 0) -> Action:
    piece = pieces_for_isolation(record.size, settings)
    cut = replace(record, cuts=record.cuts + 1)
    return Action(Kind.SPLIT, cut, piece=piece, reason=why, unanswered=unanswered, deaths=deaths)


def _exhausted(record: Record, outcome: Outcome, unanswered: int = 0) -> Action:
    return Action(Kind.BURY, record, reason=f"{EXHAUSTED}: {outcome.detail}", unanswered=unanswered)


def copy_bound(settings: Settings) -> int:
    """The most times Bento can receive one event: lost answers and worker deaths, each cut at most twice more."""
    return settings.max_unanswered + settings.max_worker_deaths + 1


def backoff_delay(
    settings: Settings, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds before retry number ``attempt + 1``.

    The step doubles from BENTO_RETRY_BACKOFF up to BENTO_RETRY_BACKOFF_MAX; jitter spreads
    workers between half the step and the full step, and never undercuts Bento's Retry-After.
    """
    step = _backoff_step(settings, attempt)
    delay = step / 2 + (rng or random).random() * step / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _backoff_step(settings: Settings, attempt: int) -> float:
    step: float = min(settings.retry_backoff_max, settings.retry_backoff * (2 ** min(attempt, 32)))  # int ** int: Any
    return step


def horizon(settings: Settings) -> float:
    """The longest wait held as a Celery countdown; a longer one waits in Redis (the deferred set).

    The flush re-dispatches deferred batches due before its next tick, so no wait needs a longer
    countdown; `bento-tasks resume` can make them due at once; and no countdown comes near the
    broker's visibility_timeout (an hour on Redis), after which it would deliver the message twice.
    """
    return min(settings.flush_interval, MAX_COUNTDOWN)


def rate_interval(settings: Settings) -> float:
    """Seconds between two POSTs across all workers (0: unlimited).

    One per cent of headroom keeps network jitter from pushing a POST into Bento's previous minute.
    """
    return 0.0 if settings.rate_limit == 0 else 60.0 / settings.rate_limit * 1.01


def dispatch_room(settings: Settings, batches: int) -> int:
    """How many more batches may be dispatched now, given ``batches`` claimed and not yet delivered.

    Under a rate limit, about two ticks' worth of POSTs are kept in flight: enough that the
    limiter, not the beat, sets the pace, while a paused Bento does not pile up messages.
    """
    if settings.rate_limit == 0:
        return 1_000_000
    per_tick = -(-settings.rate_limit * settings.flush_interval // 60)
    return max(0, int(2 * max(per_tick, 1)) - batches)
