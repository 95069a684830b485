"""The Redis buffer: the only module that speaks Redis.

Layout, all under one ``{prefix}`` hash tag:

- ``queue``: list of events as compact JSON, oldest first.
- ``batch:<id>``: a claimed batch, list of events exactly as they were queued.
- ``meta:<id>``: hash beside it: the owning attempt's token and the attempt record (``policy.Record``).
- ``inflight``: sorted set of dispatched batch ids scored by their lease deadline (Redis clock).
- ``deferred``: sorted set of batch ids waiting out a backoff, pause or rate-limit wait, scored by
  when they may go; the flush dispatches them when due.
- ``dead``: list of dead letters, each ``<JSON header>\\n<event as queued>``.
- ``stats``: hash of counters (delivered, failed, batches, unanswered, worker_deaths) and
  ``accepted_at``, when Bento last accepted a batch.
- ``reports``: the last 1000 answers in which Bento said some events failed (JSON, newest first).
- ``refusals``: the current run of single events Bento refused with the same answer.
- ``limiter``, ``paused_until``: the shared rate limiter and delivery pause.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from . import scripts
from .conf import Settings, get_settings
from .exceptions import BufferUnavailable
from .policy import Action, Health, Kind, Record, horizon

# Dead letters examined per REPLAY call: Redis runs each call in a few milliseconds.
REPLAY_WINDOW = 2000


def new_batch_id() -> str:
    return uuid.uuid4().hex


def new_token() -> str:
    """An attempt's fencing token."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Begin:
    """What BEGIN decided for a batch about to be posted."""

    state: str  # "go": the token owns it; "soon": re-dispatch after `wait`; "deferred"; "busy"; "stale"
    wait: float = 0.0  # go: seconds to sleep before the POST; soon/deferred: until it may go; busy: lease left
    events: tuple[bytes, ...] = ()
    record: Record | None = None


@dataclass(frozen=True)
class Expired:
    """A dispatched batch whose lease ran out: its message was lost, or its owner died (``owner`` set)."""

    batch_id: str
    owner: str
    record: Record


@dataclass(frozen=True)
class Done:
    """What executing an action did: ``dispatch`` lists the batches (with countdowns) to send now."""

    owned: bool
    dispatch: tuple[tuple[str, float], ...] = ()
    wait: float = 0.0  # RETRY: seconds until the batch goes again
    pause_started: bool = False  # RETRY with a pause: no pause was running before
    pause_left: float = 0.0
    buried: int = 0


@dataclass(frozen=True)
class DeadLetter:
    event: bytes  # the event exactly as it was queued
    reason: str
    status: int | None
    attempts: int
    time: str

    def as_dict(self) -> dict[str, Any]:
        try:
            event: Any = json.loads(self.event)
        except ValueError:
            event = self.event.decode("utf-8", "backslashreplace")
        return {
            "event": event,
            "reason": self.reason,
            "status": self.status,
            "attempts": self.attempts,
            "time": self.time,
        }


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _age(event: bytes | None, now: float) -> float | None:
    """Seconds since the queue's head event happened, from its ``date`` (the call time unless backdated)."""
    if event is None:
        return None
    try:
        date = dt.datetime.fromisoformat(json.loads(event)["date"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=dt.timezone.utc)
    return round(max(0.0, now - date.timestamp()), 3)


def dead_letter_header(reason: str, status: int | None = None, attempts: int = 0) -> bytes:
    header = {"reason": reason, "status": status, "attempts": attempts, "time": _utc_now()}
    return json.dumps(header, separators=(",", ":")).encode()


def _parse_dead_letter(raw: bytes) -> DeadLetter:
    header, _, event = raw.partition(b"\n")
    meta = json.loads(header)
    return DeadLetter(event, meta["reason"], meta.get("status"), meta.get("attempts", 0), meta["time"])


def _record(size: int, fields: dict[str, str]) -> Record:
    """The attempt record from its meta hash fields (missing ones take their defaults)."""

    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value else None

    status = fields.get("last_status")
    return Record(
        size=size,
        created=number("created") or 0.0,
        attempts=int(fields.get("attempts", 0)),
        isolated=int(fields.get("isolated", 0)),
        unanswered=int(fields.get("unanswered", 0)),
        deaths=int(fields.get("deaths", 0)),
        failed_at=number("failed_at"),
        first_failure=number("first_failure"),
        last_status=int(status) if status else None,
        last_detail=fields.get("last_detail", ""),
    )


def _fields(record: Record, inherited_only: bool = False) -> str:
    """The record as the JSON object of strings the scripts store (``size`` is the batch's length)."""
    values = asdict(record)
    del values["size"]
    if inherited_only:  # a piece starts its own attempts, and its own evidence, from scratch
        values = {k: values[k] for k in ("unanswered", "deaths", "first_failure")}
    return json.dumps({k: f"{v:.6f}" if isinstance(v, float) else str(v) for k, v in values.items() if v is not None})


def _decode(pairs: Sequence[bytes]) -> dict[str, str]:
    return {pairs[i].decode(): pairs[i + 1].decode("utf-8", "replace") for i in range(0, len(pairs), 2)}


class Buffer:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
        )
        tag = "{" + settings.redis_prefix + "}"
        self.queue_key = f"{tag}:queue"
        self.inflight_key = f"{tag}:inflight"
        self.deferred_key = f"{tag}:deferred"
        self.dead_key = f"{tag}:dead"
        self.stats_key = f"{tag}:stats"
        self.limiter_key = f"{tag}:limiter"
        self.paused_key = f"{tag}:paused_until"
        self.reports_key = f"{tag}:reports"
        self.refusals_key = f"{tag}:refusals"
        self._batch_prefix = f"{tag}:batch:"
        self._meta_prefix = f"{tag}:meta:"
        # redis-py runs these by SHA and reloads them after a NOSCRIPT (e.g. a Redis restart)
        register = self.redis.register_script
        self._claim = register(scripts.CLAIM)
        self._begin = register(scripts.BEGIN)
        self._ack = register(scripts.ACK)
        self._retry = register(scripts.RETRY)
        self._split = register(scripts.SPLIT)
        self._bury = register(scripts.BURY)
        self._reject = register(scripts.REJECT)
        self._release = register(scripts.RELEASE)
        self._resume = register(scripts.RESUME)
        self._replay = register(scripts.REPLAY)

    def batch_key(self, batch_id: str) -> str:
        return self._batch_prefix + batch_id

    def meta_key(self, batch_id: str) -> str:
        return self._meta_prefix + batch_id

    def _fenced(self, batch_id: str) -> list[str]:
        return [self.inflight_key, self.batch_key(batch_id), self.meta_key(batch_id)]

    # -- producers -------------------------------------------------------------------------

    def push(self, *events: bytes) -> None:
        """Append encoded events to the queue; BufferUnavailable if Redis cannot take them."""
        try:
            self.redis.rpush(self.queue_key, *events)
        except redis.RedisError as exc:
            raise BufferUnavailable(f"could not queue the event in Redis: {exc}") from exc

    def bury_event(self, event: bytes, reason: str) -> None:
        """Dead-letter one event that never made it into the queue."""
        self.redis.rpush(self.dead_key, dead_letter_header(reason) + b"\n" + event)

    # -- the flush -------------------------------------------------------------------------

    def claim(self, full_only: bool = False) -> tuple[str, int] | None:
        """Atomically move the next batch from the queue into a leased batch; return its id and size.

        With ``full_only``, a queue too short for a full batch (by count or bytes) is left alone.
        """
        batch_id = new_batch_id()
        s = self.settings
        count = self._claim(
            keys=[self.queue_key, self.inflight_key, self.batch_key(batch_id), self.meta_key(batch_id)],
            args=[s.batch_size, s.batch_max_bytes, s.lease_seconds, batch_id, int(full_only)],
        )
        return (batch_id, count) if count else None

    def expired(self, limit: int = 1000) -> list[Expired]:
        """Dispatched batches whose lease ran out, with their owner (if an attempt had taken them) and record."""
        ids = [b.decode() for b in self.redis.zrangebyscore(self.inflight_key, "-inf", self.now(), start=0, num=limit)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.meta_key(batch_id)).llen(self.batch_key(batch_id))
        replies = pipe.execute()
        found = []
        for batch_id, meta, size in zip(ids, replies[::2], replies[1::2], strict=True):
            fields = {k.decode(): v.decode("utf-8", "replace") for k, v in meta.items()}
            found.append(Expired(batch_id, fields.pop("owner", ""), _record(size, fields)))
        return found

    def release_deferred(self, limit: int) -> list[tuple[str, float]]:
        """Move deferred batches due before the next flush back in flight; return (id, countdown) for each."""
        if limit <= 0:
            return []
        s = self.settings
        reply = self._release(keys=[self.deferred_key, self.inflight_key], args=[horizon(s), s.lease_seconds, limit])
        return [(reply[i].decode(), float(reply[i + 1])) for i in range(0, len(reply), 2)]

    def batch_counts(self) -> tuple[int, int]:
        """(dispatched, deferred) batches."""
        pipe = self.redis.pipeline(transaction=False)
        dispatched, deferred = pipe.zcard(self.inflight_key).zcard(self.deferred_key).execute()
        return dispatched, deferred

    def now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1_000_000

    # -- the post task -----------------------------------------------------------------------

    def begin(self, batch_id: str, token: str, interval: float, max_sleep: float) -> Begin:
        """Let the attempt ``token`` take the batch, or say why not (see scripts.BEGIN)."""
        s = self.settings
        keys = [*self._fenced(batch_id), self.deferred_key, self.limiter_key, self.paused_key]
        reply = self._begin(keys=keys, args=[batch_id, token, s.lease_seconds, interval, max_sleep, horizon(s)])
        code = reply[0]
        if code == -1:
            return Begin("stale")
        wait = max(0.0, float(reply[1]))
        if code == -2:
            return Begin("busy", wait)
        if code == 0:
            return Begin("soon", wait)
        if code == 2:
            return Begin("deferred", wait)
        fields = _decode(reply[3])
        fields.pop("owner")
        return Begin("go", wait, tuple(reply[2]), _record(len(reply[2]), fields))

    def reject(self, batch_id: str, token: str, rejected: list[tuple[bytes, str]]) -> int:
        """Move invalid events of a batch about to be posted to the dead letters; return how many stay."""
        args: list[Any] = [batch_id, token, "0"]
        for event, reason in rejected:
            args += [event, dead_letter_header(reason)]
        return int(self._reject(keys=[*self._fenced(batch_id), self.dead_key], args=args))

    def health(self) -> Health:
        """When Bento last accepted a batch, and the current run of identical refusals."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time().hget(self.stats_key, "accepted_at").hmget(self.refusals_key, "answer", "count")
        (seconds, micros), accepted_at, (answer, count) = pipe.execute()
        return Health(
            now=seconds + micros / 1_000_000,
            accepted_at=float(accepted_at) if accepted_at else None,
            refusal=answer.decode("utf-8", "replace") if answer else None,
            refusals=int(count or 0),
        )

    def execute(
        self, batch_id: str, token: str, action: Action, recovering: bool = False, report: dict[str, int] | None = None
    ) -> Done:
        """Carry out ``action`` in one script, if the attempt ``token`` still owns the batch.

        ``recovering``: a flush acts for an attempt whose lease ran out (its token, or '' when no attempt
        had taken the batch). ``report``: for ACK, Bento's answer (size, results, failed).
        """
        try:
            return self._execute(batch_id, token, action, recovering, report)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError) as exc:
            # Safe to call again: a step that did run left the batch no longer owned by this token.
            raise BufferUnavailable(f"could not record the outcome in Redis: {exc}") from exc

    def _execute(
        self, batch_id: str, token: str, action: Action, recovering: bool, report: dict[str, int] | None
    ) -> Done:
        s = self.settings
        fence = [batch_id, token, "1" if recovering else "0"]
        counts = json.dumps(
            {k: v for k, v in (("unanswered", action.unanswered), ("worker_deaths", action.deaths)) if v}
        )
        if action.kind is Kind.ACK:
            answer = report or {"batch_size": 0, "results": 0, "failed": 0}
            note = json.dumps({"time": _utc_now(), **answer})
            keys = [*self._fenced(batch_id), self.stats_key, self.reports_key, self.refusals_key]
            owned = self._ack(keys=keys, args=[*fence, answer["results"], answer["failed"], note])
            return Done(bool(owned))
        if action.kind is Kind.RETRY:
            keys = [*self._fenced(batch_id), self.deferred_key, self.paused_key, self.stats_key]
            retry: list[str | float] = [*fence, action.delay, action.pause, horizon(s), s.lease_seconds]
            reply = self._retry(keys=keys, args=[*retry, _fields(action.record), counts])
            if not reply[0]:
                return Done(False)
            wait = float(reply[2])
            return Done(
                True,
                dispatch=((batch_id, wait),) if reply[1] else (),
                wait=wait,
                pause_started=bool(reply[3]),
                pause_left=float(reply[4]),
            )
        if action.kind is Kind.SPLIT:
            ids = [new_batch_id() for _ in range(-(-action.record.size // action.piece))]
            keys = [*self._fenced(batch_id), self.stats_key]
            for piece in ids:
                keys += [self.batch_key(piece), self.meta_key(piece)]
            split: list[str | float] = [*fence, action.piece, s.lease_seconds]
            inherited = _fields(action.record, inherited_only=True)
            pieces = int(self._split(keys=keys, args=[*split, inherited, counts, *ids]))
            return Done(bool(pieces), dispatch=tuple((piece, 0.0) for piece in ids[:pieces]))
        header = dead_letter_header(action.reason, action.record.last_status, action.record.attempts)
        keys = [*self._fenced(batch_id), self.dead_key, self.refusals_key, self.stats_key]
        buried = int(self._bury(keys=keys, args=[*fence, header, action.refusal or "", counts]))
        return Done(bool(buried), buried=buried)

    # -- operations --------------------------------------------------------------------------

    def resume(self) -> tuple[bool, int]:
        """End a pause and make every deferred batch due now; returns (a pause was running, batches waiting)."""
        paused, waiting = self._resume(keys=[self.paused_key, self.deferred_key])
        return bool(paused), int(waiting)

    def memory_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None where the server refuses CONFIG (managed Redis often does)."""
        try:
            reply = self.redis.config_get("maxmemory-policy")
        except redis.ResponseError:
            return None
        except redis.RedisError as exc:
            raise BufferUnavailable(f"could not reach Redis: {exc}") from exc
        value = reply.get("maxmemory-policy")
        return value.decode() if isinstance(value, bytes) else value

    def status(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue_key).zrange(self.inflight_key, 0, -1).zrange(self.deferred_key, 0, -1)
        pipe.llen(self.dead_key).hgetall(self.stats_key).get(self.paused_key).time()
        pipe.lindex(self.queue_key, 0).llen(self.reports_key)
        queued, dispatched, deferred, dead, stats, paused, (secs, micros), oldest, reports = pipe.execute()
        now = secs + micros / 1e6
        batch_ids = [*dispatched, *deferred]
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.llen(self.batch_key(batch_id.decode()))
        in_flight = sum(pipe.execute()) if batch_ids else 0
        paused_until = float(paused) if paused and float(paused) > now else None
        return {
            "queued": queued,
            "in_flight": in_flight,
            "dead": dead,
            "batches_in_flight": len(batch_ids),
            "batches_deferred": len(deferred),
            "delivered": int(stats.get(b"delivered", 0)),
            "failed": int(stats.get(b"failed", 0)),
            "batches_delivered": int(stats.get(b"batches", 0)),
            "unanswered": int(stats.get(b"unanswered", 0)),
            "worker_deaths": int(stats.get(b"worker_deaths", 0)),
            "failure_reports": reports,
            "oldest_queued_age": _age(oldest, now),
            "paused_until": (
                dt.datetime.fromtimestamp(paused_until, dt.timezone.utc).isoformat(timespec="seconds")
                if paused_until
                else None
            ),
            "maxmemory_policy": self.memory_policy(),
        }

    def failure_reports(self, limit: int = -1) -> list[dict[str, Any]]:
        """Bento's answers that counted failed events, newest first (``limit`` < 0: all)."""
        return [json.loads(raw) for raw in self._first(self.reports_key, limit)]

    def dead_letters(self, limit: int = -1) -> list[DeadLetter]:
        """Dead letters, oldest first (``limit`` < 0: all)."""
        return [_parse_dead_letter(raw) for raw in self._first(self.dead_key, limit)]

    def _first(self, key: str, limit: int) -> list[bytes]:
        return [] if limit == 0 else self.redis.lrange(key, 0, limit - 1 if limit > 0 else -1)

    def replay(self, reason_contains: str | None = None) -> int:
        """Put dead letters (all, or those whose reason contains the text) back on the queue.

        One pass over the list, in windows (see scripts.REPLAY): linear, whatever the mix.
        """
        left = self.redis.llen(self.dead_key)
        moved = 0
        while left > 0:
            window = min(REPLAY_WINDOW, left)
            examined, put_back = self._replay(
                keys=[self.dead_key, self.queue_key], args=[window, reason_contains or ""]
            )
            moved += put_back
            left -= window
            if examined < window:  # emptied meanwhile (a purge, another replay)
                break
        return moved

    def purge_dead(self) -> int:
        pipe = self.redis.pipeline()
        pipe.llen(self.dead_key).unlink(self.dead_key)
        count, _ = pipe.execute()
        return count


_lock = threading.Lock()
_buffer: Buffer | None = None


def get_buffer() -> Buffer:
    """The process-wide buffer for the current settings (rebuilt after ``reset_settings``)."""
    global _buffer
    settings = get_settings()
    if _buffer is None or _buffer.settings is not settings:
        with _lock:
            if _buffer is None or _buffer.settings is not settings:
                _buffer = Buffer(settings)
    return _buffer
