"""The Redis buffer: the only module that speaks Redis.

Layout, all under one ``{prefix}`` hash tag:

- ``queue``: list of events as compact JSON, oldest first.
- ``batch:<id>``: a claimed batch, list of events exactly as they were queued.
- ``inflight``: sorted set of batch ids scored by their lease deadline (Redis clock).
- ``dead``: list of dead letters, each ``<JSON header>\\n<event as queued>``.
- ``stats``: hash of counters (delivered, failed, batches).
- ``reports``: the last 1000 answers in which Bento said some events failed (JSON, newest first).
- ``limiter``, ``paused_until``: the shared rate limiter and delivery pause.
- ``outbox:<database alias>:<period>``: outbox rows pushed whose delete may not have committed yet (``relay_rows``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import scripts
from .conf import Settings, get_settings
from .exceptions import BufferUnavailable

#: Seconds (at least) a relayed outbox row is remembered when its relay could not say its delete committed:
#: far longer than a relay takes to come back after a crash, a Redis or a database outage.
RELAY_MEMORY = 7 * 24 * 3600


def new_batch_id() -> str:
    return uuid.uuid4().hex


def _row_record(row_id: int, event: bytes) -> bytes:
    # The event's digest beside the id: a reused id (a restored database, a reset sequence) with another
    # event is a different row, never mistaken for one already relayed.
    return row_id.to_bytes(8, "big") + hashlib.blake2b(event, digest_size=8).digest()


@dataclass(frozen=True)
class Pushed:
    """What ``relay_rows`` did: how many events it pushed, and where it recorded the rows (``forget_relayed``)."""

    count: int
    key: str
    records: bytes


@dataclass(frozen=True)
class Begin:
    """What BEGIN decided for a batch about to be posted."""

    stale: bool = False  # handed over to another task: do nothing
    reserved: bool = False  # a rate-limit slot is ours: POST `events` after `wait`
    wait: float = 0.0  # seconds until the POST may go (or until it is worth asking again)
    events: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class DeadLetter:
    raw: bytes  # as stored in Redis, the key for replay
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
    return DeadLetter(raw, event, meta["reason"], meta.get("status"), meta.get("attempts", 0), meta["time"])


class Buffer:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
        )
        tag = "{" + settings.redis_prefix + "}"
        self.queue_key = f"{tag}:queue"
        self.inflight_key = f"{tag}:inflight"
        self.dead_key = f"{tag}:dead"
        self.stats_key = f"{tag}:stats"
        self.limiter_key = f"{tag}:limiter"
        self.paused_key = f"{tag}:paused_until"
        self.reports_key = f"{tag}:reports"
        self._batch_prefix = f"{tag}:batch:"
        self._relayed_prefix = f"{tag}:outbox:"
        # redis-py runs these by SHA and reloads them after a NOSCRIPT (e.g. a Redis restart)
        register = self.redis.register_script
        self._claim = register(scripts.CLAIM)
        self._begin = register(scripts.BEGIN)
        self._ack = register(scripts.ACK)
        self._handoff = register(scripts.HANDOFF)
        self._split = register(scripts.SPLIT)
        self._bury = register(scripts.BURY)
        self._reject = register(scripts.REJECT)
        self._pause = register(scripts.PAUSE)
        self._replay = register(scripts.REPLAY)
        self._relay = register(scripts.RELAY)
        self._forget = register(scripts.FORGET)

    def batch_key(self, batch_id: str) -> str:
        return self._batch_prefix + batch_id

    # -- producers -------------------------------------------------------------------------

    def push(self, *events: bytes) -> None:
        """Append encoded events to the queue; BufferUnavailable if Redis cannot take them."""
        try:
            self.redis.rpush(self.queue_key, *events)
        except redis.RedisError as exc:
            raise BufferUnavailable(f"could not queue the event in Redis: {exc}") from exc

    def relay_rows(self, alias: str, rows: Sequence[tuple[int, bytes]], forget: Pushed | None = None) -> Pushed:
        """Push outbox rows (id, event) of database ``alias``, skipping rows pushed before.

        Until their records are dropped (``forget`` of the next call, or ``forget_relayed``), once the rows'
        delete has committed, a second attempt at the same rows pushes nothing. BufferUnavailable if Redis
        cannot take them: then either nothing was pushed, or all of them were (and are recorded).
        """
        key, previous = self._record_keys(alias)
        records = b"".join(_row_record(row_id, event) for row_id, event in rows)
        dropped = forget.records if forget else b""
        keys = [self.queue_key, key, previous, forget.key if forget else key]
        try:
            pushed = self._relay(keys=keys, args=[2 * RELAY_MEMORY, records, dropped, *(e for _, e in rows)])
        except redis.RedisError as exc:
            raise BufferUnavailable(f"could not relay outbox rows to Redis: {exc}") from exc
        return Pushed(pushed, key, records)

    def forget_relayed(self, pushed: Pushed) -> None:
        """Drop the records of relayed rows whose delete has committed: they can never be relayed again."""
        try:
            self._forget(keys=[pushed.key], args=[pushed.records])
        except redis.RedisError:
            pass  # the records lapse with their set; they only cost memory until then

    def _record_keys(self, alias: str) -> tuple[str, str]:
        # Periods by this machine's clock: processes whose clocks differ by less than a period still look in
        # each other's sets, as every lookup reads two periods.
        period = int(time.time() // RELAY_MEMORY)
        return f"{self._relayed_prefix}{alias}:{period}", f"{self._relayed_prefix}{alias}:{period - 1}"

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
            keys=[self.queue_key, self.inflight_key, self.batch_key(batch_id)],
            args=[s.batch_size, s.batch_max_bytes, s.lease_seconds, batch_id, int(full_only)],
        )
        return (batch_id, count) if count else None

    def reject(self, batch_id: str, rejected: list[tuple[bytes, str]]) -> int:
        """Move invalid events of a batch about to be posted to the dead letters; return how many stay."""
        args: list[Any] = [batch_id]
        for event, reason in rejected:
            args += [event, dead_letter_header(reason)]
        return self._reject(keys=[self.inflight_key, self.batch_key(batch_id), self.dead_key], args=args)

    def recover_expired(self) -> Iterator[str]:
        """Hand over batches whose lease ran out (their worker died); yield their new ids."""
        now = self.now()
        for old in self.redis.zrangebyscore(self.inflight_key, "-inf", now, start=0, num=1000):
            new = self.handoff(old.decode(), self.settings.lease_seconds, only_if_expired=True)
            if new:
                yield new

    def inflight_batches(self) -> int:
        return self.redis.zcard(self.inflight_key)

    def busy_batches(self) -> int:
        """Batches in flight that may be posted within one lease; those waiting out a backoff do not count."""
        return self.redis.zcount(self.inflight_key, "-inf", self.now() + self.settings.lease_seconds + 1)

    def now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1_000_000

    # -- the post task -----------------------------------------------------------------------

    def begin(self, batch_id: str, interval: float, max_sleep: float) -> Begin:
        reply = self._begin(
            keys=[self.inflight_key, self.batch_key(batch_id), self.limiter_key, self.paused_key],
            args=[batch_id, self.settings.lease_seconds, interval, max_sleep],
        )
        if reply[0] == -1:
            return Begin(stale=True)
        wait = max(0.0, float(reply[1]))
        if reply[0] == 1:
            return Begin(reserved=True, wait=wait, events=tuple(reply[2]))
        return Begin(wait=wait)

    def ack(self, batch_id: str, size: int, accepted: int, failed: int) -> bool:
        keys = [self.inflight_key, self.batch_key(batch_id), self.stats_key, self.reports_key]
        report = json.dumps({"time": _utc_now(), "batch_size": size, "results": accepted, "failed": failed})
        return bool(self._ack(keys=keys, args=[batch_id, accepted, failed, report]))

    def handoff(self, batch_id: str, lease: float, only_if_expired: bool = False) -> str | None:
        new = new_batch_id()
        keys = [self.inflight_key, self.batch_key(batch_id), self.batch_key(new)]
        done = self._handoff(keys=keys, args=[batch_id, new, lease, "1" if only_if_expired else "0"])
        return new if done else None

    def split(self, batch_id: str) -> tuple[str, str] | None:
        left, right = new_batch_id(), new_batch_id()
        keys = [self.inflight_key, self.batch_key(batch_id), self.batch_key(left), self.batch_key(right)]
        done = self._split(keys=keys, args=[batch_id, left, right, self.settings.lease_seconds])
        return (left, right) if done else None

    def bury(self, batch_id: str, reason: str, status: int | None, attempts: int) -> int:
        keys = [self.inflight_key, self.batch_key(batch_id), self.dead_key]
        return self._bury(keys=keys, args=[batch_id, dead_letter_header(reason, status, attempts)])

    def pause(self, seconds: float) -> tuple[bool, float]:
        """Pause every worker's POSTs; returns (this call started the pause, seconds left)."""
        started, left = self._pause(keys=[self.paused_key], args=[seconds])
        return bool(started), float(left)

    # -- status and dead letters -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue_key).zrange(self.inflight_key, 0, -1).llen(self.dead_key)
        pipe.hgetall(self.stats_key).get(self.paused_key).time().lindex(self.queue_key, 0).llen(self.reports_key)
        queued, batch_ids, dead, stats, paused, (secs, micros), oldest, reports = pipe.execute()
        now = secs + micros / 1e6
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
            "delivered": int(stats.get(b"delivered", 0)),
            "failed": int(stats.get(b"failed", 0)),
            "batches_delivered": int(stats.get(b"batches", 0)),
            "failure_reports": reports,
            "oldest_queued_age": _age(oldest, now),
            "paused_until": (
                dt.datetime.fromtimestamp(paused_until, dt.timezone.utc).isoformat(timespec="seconds")
                if paused_until
                else None
            ),
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
        """Put dead letters (all, or those whose reason contains the text) back on the queue."""
        moved = 0
        for letter in self.dead_letters():
            if reason_contains is None or reason_contains in letter.reason:
                moved += self._replay(keys=[self.dead_key, self.queue_key], args=[letter.raw, letter.event])
        return moved

    def purge_dead(self) -> int:
        pipe = self.redis.pipeline()
        pipe.llen(self.dead_key).delete(self.dead_key)
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
