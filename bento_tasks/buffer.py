"""The Redis buffer: the only module that speaks Redis.

Layout, all under one ``{prefix}`` hash tag:

- ``queue``: list of events as compact JSON, oldest first.
- ``batch:<id>``: a claimed batch, list of events exactly as they were queued.
- ``inflight``: sorted set of batch ids scored by their lease deadline (Redis clock).
- ``dead``: list of dead letters, each ``<JSON header>\\n<event as queued>``.
- ``stats``: hash of counters (delivered, failed, batches).
- ``reports``: the last 1000 answers in which Bento said some events failed (JSON, newest first).
- ``limiter``, ``paused_until``: the shared rate limiter and delivery pause.
- ``last_flush``: when the last flush finished (Redis clock, seconds), so ``status`` can tell a missing beat.
- ``metrics``: hash of cumulative counters for operators (POSTs by status class, retries, splits,
  events dead-lettered, the POST duration histogram; see ``telemetry``).
- ``minute:<n>``: per-minute series (events delivered, POSTs, 429/5xx/errors, queue depth), kept a day.
- ``posts``: the last POSTs (time, events, status, duration), JSON, newest first.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis

from . import scripts, telemetry
from .conf import Settings, get_settings
from .exceptions import BufferUnavailable


def new_batch_id() -> str:
    return uuid.uuid4().hex


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

    @property
    def email(self) -> str | None:
        """The event's email, if the event is a JSON object with a string email."""
        try:
            event = json.loads(self.event)
        except ValueError:
            return None
        email = event.get("email") if isinstance(event, dict) else None
        return email if isinstance(email, str) else None

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


def describe_redis(url: str) -> dict[str, Any]:
    """Which Redis a URL points at (host, port, db; or a socket path), never its password."""
    parts: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in parts:
        return {"path": parts["path"], "db": parts.get("db", 0)}
    return {"host": parts.get("host", "localhost"), "port": parts.get("port", 6379), "db": parts.get("db", 0)}


_P = ParamSpec("_P")
_Result = TypeVar("_Result")


def _reachable(method: Callable[Concatenate[Buffer, _P], _Result]) -> Callable[Concatenate[Buffer, _P], _Result]:
    """Operators' reads and writes raise BufferUnavailable naming the Redis, not a redis-py traceback."""

    @functools.wraps(method)
    def wrapper(self: Buffer, /, *args: _P.args, **kwargs: _P.kwargs) -> _Result:
        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            where = describe_redis(self.settings.redis_url)
            shown = where.get("path") or f"{where['host']}:{where['port']}"
            raise BufferUnavailable(f"Redis at {shown} db {where['db']} is unavailable: {exc}") from exc

    return wrapper


def dead_letter_header(reason: str, status: int | None = None, attempts: int = 0) -> bytes:
    header = {"reason": reason, "status": status, "attempts": attempts, "time": _utc_now()}
    return json.dumps(header, separators=(",", ":")).encode()


def _parse_dead_letter(raw: bytes) -> DeadLetter:
    header, _, event = raw.partition(b"\n")
    meta = json.loads(header)
    return DeadLetter(raw, event, meta["reason"], meta.get("status"), meta.get("attempts", 0), meta["time"])


def dead_letter_id(raw: bytes) -> str:
    """A short stable name for a dead letter as stored (pages and forms name letters by it)."""
    return hashlib.sha1(raw).hexdigest()[:20]


def _tombstone() -> str:
    # Dead letters start with their JSON header ("{"): this can never be one of them.
    return f"\x00bento-tombstone:{uuid.uuid4().hex}"


def _ascii_lower(text: str) -> str:
    # Lua's string.lower (REPLAY_MATCHING) folds ASCII only; the Python side must match the same letters.
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a page shows or a replay takes; empty fields match everything.

    ``reason``: text the reason contains (case-sensitive, as ``bento-tasks dead replay --reason``);
    ``status``: ``"none"`` (no HTTP status) or a status code; ``email``: text the event's email
    contains (ASCII case-insensitive). The same rules run in Python (pages) and in Lua (REPLAY_MATCHING).
    """

    reason: str = ""
    status: str = ""
    email: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("", "none") and not (self.status.isascii() and self.status.isdigit()):
            raise ValueError(f"status must be empty, 'none' or an HTTP status code, got {self.status!r}")

    @property
    def empty(self) -> bool:
        return not (self.reason or self.status or self.email)

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason and self.reason not in letter.reason:
            return False
        if self.status == "none" and letter.status is not None:
            return False
        if self.status not in ("", "none") and letter.status != int(self.status):
            return False
        if self.email:
            email = letter.email
            if email is None or _ascii_lower(self.email) not in _ascii_lower(email):
                return False
        return True


@dataclass(frozen=True)
class DeadScan:
    """A page of dead letters, newest first, found by scanning a bounded window of the list."""

    total: int  # dead letters in Redis when the page was read
    letters: list[tuple[int, DeadLetter]] = field(default_factory=list)  # (index from the oldest, letter)
    scanned: int = 0  # entries examined for this page
    before: int | None = None  # pass as ``before`` for the next (older) page; None: no older entries


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
        self.last_flush_key = f"{tag}:last_flush"
        self.metrics_key = f"{tag}:metrics"
        self.posts_key = f"{tag}:posts"
        self._minute_prefix = f"{tag}:minute:"
        self._batch_prefix = f"{tag}:batch:"
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
        self._record_depth = register(scripts.RECORD_DEPTH)
        self._replay_matching = register(scripts.REPLAY_MATCHING)
        self._remove_letters = register(scripts.REMOVE_LETTERS)

    def batch_key(self, batch_id: str) -> str:
        return self._batch_prefix + batch_id

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

    def mark_flushed(self) -> None:
        """Record that a flush ran, on Redis's clock (``status`` compares it with the same clock)."""
        self.redis.set(self.last_flush_key, repr(self.now()))

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

    @_reachable
    def status(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue_key).zrange(self.inflight_key, 0, -1).llen(self.dead_key)
        pipe.hgetall(self.stats_key).get(self.paused_key).time().lindex(self.queue_key, 0).llen(self.reports_key)
        pipe.get(self.last_flush_key)
        queued, batch_ids, dead, stats, paused, (secs, micros), oldest, reports, flushed = pipe.execute()
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
            "last_flush_age": round(max(0.0, now - float(flushed)), 3) if flushed else None,
            "paused_until": (
                dt.datetime.fromtimestamp(paused_until, dt.timezone.utc).isoformat(timespec="seconds")
                if paused_until
                else None
            ),
        }

    @_reachable
    def failure_reports(self, limit: int = -1) -> list[dict[str, Any]]:
        """Bento's answers that counted failed events, newest first (``limit`` < 0: all)."""
        return [json.loads(raw) for raw in self._first(self.reports_key, limit)]

    @_reachable
    def dead_letters(self, limit: int = -1) -> list[DeadLetter]:
        """Dead letters, oldest first (``limit`` < 0: all)."""
        return [_parse_dead_letter(raw) for raw in self._first(self.dead_key, limit)]

    def _first(self, key: str, limit: int) -> list[bytes]:
        return [] if limit == 0 else self.redis.lrange(key, 0, limit - 1 if limit > 0 else -1)

    @_reachable
    def replay(self, reason_contains: str | None = None) -> int:
        """Put dead letters (all, or those whose reason contains the text) back on the queue."""
        moved = 0
        for letter in self.dead_letters():
            if reason_contains is None or reason_contains in letter.reason:
                moved += self._replay(keys=[self.dead_key, self.queue_key], args=[letter.raw, letter.event])
        return moved

    @_reachable
    def purge_dead(self) -> int:
        pipe = self.redis.pipeline()
        pipe.llen(self.dead_key).delete(self.dead_key)
        count, _ = pipe.execute()
        return count

    def resume(self) -> bool:
        """End a delivery pause now; True if one was running."""
        return bool(self.redis.delete(self.paused_key))

    # -- operations: dead letters page by page ------------------------------------------------

    @_reachable
    def scan_dead(
        self, where: DeadLetterFilter, before: int | None = None, want: int = 100, max_scan: int = 10_000
    ) -> DeadScan:
        """Dead letters matching ``where``, newest first, from index ``before`` (exclusive) down.

        Reads LRANGE windows of at most 1000 entries and stops after ``want`` matches or ``max_scan``
        entries, so a page costs the same with 100 or 100,000 dead letters; ``DeadScan.before``
        continues where it stopped.
        """
        total = self.redis.llen(self.dead_key)
        pos = total if before is None else max(0, min(before, total))
        found: list[tuple[int, DeadLetter]] = []
        scanned = 0
        while pos > 0 and scanned < max_scan and len(found) < want:
            chunk = min(1000, max_scan - scanned)
            if where.empty:  # every entry matches: read just the page
                chunk = min(chunk, want - len(found))
            low = max(0, pos - chunk)
            raws = self.redis.lrange(self.dead_key, low, pos - 1)
            next_pos = low
            for offset in range(len(raws) - 1, -1, -1):
                scanned += 1
                letter = _parse_dead_letter(raws[offset])
                if where.matches(letter):
                    found.append((low + offset, letter))
                    if len(found) == want:
                        next_pos = low + offset
                        break
            pos = next_pos
        return DeadScan(total, found, scanned, pos if pos > 0 else None)

    @_reachable
    def find_dead_letters(
        self, refs: Sequence[tuple[int, str]], window: int = 200
    ) -> list[tuple[int, DeadLetter] | None]:
        """Each ``(index, dead_letter_id)`` found near its index (replays and purges shift indices), or None.

        Nearby windows are merged, so a page's selection costs one LRANGE of about the page's span.
        """
        spans: list[list[int]] = []
        for index in sorted(index for index, _ in refs):
            low, high = max(0, index - window), index + window
            if spans and low <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], high)
            else:
                spans.append([low, high])
        pipe = self.redis.pipeline(transaction=True)  # one snapshot: the spans' indices agree
        for low, high in spans:
            pipe.lrange(self.dead_key, low, high)
        where: dict[str, list[int]] = {}
        raws: dict[int, bytes] = {}
        for (low, _), chunk in zip(spans, pipe.execute() if spans else [], strict=True):
            for offset, raw in enumerate(chunk):
                raws[low + offset] = raw
                where.setdefault(dead_letter_id(raw), []).append(low + offset)
        found: list[tuple[int, DeadLetter] | None] = []
        for index, letter_id in refs:
            hits = where.get(letter_id)
            if not hits:
                found.append(None)
                continue
            nearest = min(hits, key=lambda i: abs(i - index))
            found.append((nearest, _parse_dead_letter(raws[nearest])))
        return found

    @_reachable
    def replay_letters(self, found: Sequence[tuple[int, DeadLetter]]) -> int:
        """Put these dead letters (with the index each was seen at) back on the queue; returns how many were
        still there. One pass over the list for the lot, wherever they are."""
        return self._remove(found, requeue=True)

    @_reachable
    def purge_letters(self, found: Sequence[tuple[int, DeadLetter]]) -> int:
        """Delete these dead letters (with the index each was seen at) for good; returns how many were still there."""
        return self._remove(found, requeue=False)

    def _remove(self, found: Sequence[tuple[int, DeadLetter]], requeue: bool) -> int:
        removed = 0
        for start in range(0, len(found), 1000):  # Lua's unpack() takes a few thousand values at most
            args: list[Any] = [_tombstone(), "1" if requeue else "0"]
            for index, letter in found[start : start + 1000]:
                args += [index, letter.raw, letter.event]
            removed += int(self._remove_letters(keys=[self.dead_key, self.queue_key], args=args))
        return removed

    @_reachable
    def replay_matching(self, where: DeadLetterFilter) -> int:
        """Put every dead letter matching ``where`` back on the queue, in one linear pass; returns how many."""
        return int(
            self._replay_matching(
                keys=[self.dead_key, self.queue_key],
                args=[where.reason, where.status, _ascii_lower(where.email), _tombstone()],
            )
        )

    # -- operations: what the tasks record -------------------------------------------------------

    def record_post(self, sample: telemetry.PostSample, now: float | None = None) -> None:
        """Count one POST: counters and histogram, this minute's series, the recent POSTs list.

        One MULTI round trip, by the post task after each POST. The minute comes from this host's
        clock: a few seconds of skew moves a sample to the next minute of a chart, nothing more.
        """
        now = time.time() if now is None else now
        minute_key = self._minute_prefix + str(telemetry.minute_of(now))
        post = {
            "time": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
            "events": sample.events,
            "status": sample.status,
            "seconds": round(sample.seconds, 4),
            "delivered": sample.delivered,
            "failed": sample.failed,
            "action": sample.action,
        }
        pipe = self.redis.pipeline(transaction=True)
        for name, increment in sample.counter_increments().items():
            pipe.hincrby(self.metrics_key, name, increment)
        pipe.hincrbyfloat(self.metrics_key, "duration_sum", sample.seconds)
        for name, increment in sample.minute_increments().items():
            pipe.hincrby(minute_key, name, increment)
        pipe.expire(minute_key, telemetry.SERIES_TTL)
        pipe.lpush(self.posts_key, json.dumps(post, separators=(",", ":")))
        pipe.ltrim(self.posts_key, 0, telemetry.RECENT_POSTS - 1)
        pipe.execute()

    def record_dead_lettered(self, count: int) -> None:
        """Count events dead-lettered without a POST (invalid before posting)."""
        self.redis.hincrby(self.metrics_key, "dead_lettered", count)

    def record_depth(self, now: float | None = None) -> int:
        """Note the queue's length in this minute's series (the minute keeps its largest); returns it."""
        minute = telemetry.minute_of(time.time() if now is None else now)
        keys = [self.queue_key, self._minute_prefix + str(minute)]
        return int(self._record_depth(keys=keys, args=[telemetry.SERIES_TTL]))

    # -- operations: what the admin and the metrics read ---------------------------------------

    @_reachable
    def counters(self) -> dict[str, float]:
        """The cumulative operator counters (``telemetry`` names), e.g. ``posts:2xx``, ``retries``."""
        return {key.decode(): float(value) for key, value in self.redis.hgetall(self.metrics_key).items()}

    @_reachable
    def series(self, minutes: int = 60, now: float | None = None) -> list[dict[str, Any]]:
        """The last ``minutes`` minutes, oldest first: delivered, posts, status_429/5xx/error, depth.

        ``depth`` is None for a minute in which no flush ran.
        """
        last = telemetry.minute_of(time.time() if now is None else now)
        pipe = self.redis.pipeline(transaction=False)
        span = range(last - minutes + 1, last + 1)
        for minute in span:
            pipe.hgetall(self._minute_prefix + str(minute))
        rows = []
        for minute, values in zip(span, pipe.execute(), strict=True):
            row: dict[str, Any] = {"minute": minute, "depth": None}
            for name in ("delivered", "posts", "status_429", "status_5xx", "status_error"):
                row[name] = int(values.get(name.encode(), 0))
            if b"depth" in values:
                row["depth"] = int(values[b"depth"])
            rows.append(row)
        return rows

    @_reachable
    def recent_posts(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last POSTs, newest first: time, events, status, seconds, delivered, failed, action."""
        return [json.loads(raw) for raw in self.redis.lrange(self.posts_key, 0, limit - 1)]

    @_reachable
    def failure_reports_page(self, offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """How many failure reports are kept (at most 1000), and ``limit`` of them from ``offset``, newest first."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.llen(self.reports_key).lrange(self.reports_key, offset, offset + limit - 1)
        total, raws = pipe.execute()
        return total, [json.loads(raw) for raw in raws]

    @_reachable
    def overview(self) -> dict[str, Any]:
        """``status()``, for the admin page; Redis errors become BufferUnavailable."""
        return self.status()


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
