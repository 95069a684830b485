"""The Redis buffer: the only module that speaks Redis.

Layout, all under one ``{prefix}`` hash tag:

- ``queue``: list of events as compact JSON, oldest first.
- ``batch:<id>``: a claimed batch, list of events exactly as they were queued.
- ``meta:<id>``: hash beside it: the owning attempt's token and the attempt record (``policy.Record``).
- ``inflight``: sorted set of dispatched batch ids scored by their lease deadline (Redis clock).
- ``deferred``: sorted set of batch ids waiting out a backoff, pause or rate-limit wait, scored by
  when they may go; the flush dispatches them when due.
- ``dead``: list of dead letters, each ``<JSON header>\\n<event as queued>``.
- ``stats``: hash of counters (delivered, failed, batches, unanswered, worker_deaths),
  ``accepted_at``, when Bento last accepted a batch, and ``silent``, attempts unanswered since then.
- ``reports``: the last 1000 answers in which Bento said some events failed (JSON, newest first).
- ``refusals``: the current run of single events Bento refused with the same answer.
- ``limiter``, ``paused_until``: the shared rate limiter and delivery pause.
- ``probe``: the token of the one attempt allowed to post while Bento answers no one (see scripts.BEGIN).
- ``last_flush``: when the last flush finished (Redis clock, seconds), so ``status`` can tell a missing beat.
- ``metrics``: hash of cumulative counters for operators (POSTs by status class, retries, splits,
  events dead-lettered, the POST duration histogram; see ``telemetry``).
- ``minute:<n>``: per-minute series (events delivered, POSTs, 429/5xx/errors, queue depth), kept a day.
- ``posts``: the last POSTs (time, events, status, duration), JSON, newest first.
- ``outbox:<database alias>:<period>``: outbox rows pushed whose delete may not have committed yet (``relay_rows``).
- ``sent:<period>``: ids of the send_event messages whose event was queued (``push_once``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import scripts, telemetry
from .conf import Settings, get_settings
from .exceptions import BufferUnavailable, InvalidFilter
from .policy import SILENT_OUTAGE, Action, Health, Kind, Record, horizon

# Dead letters examined per REPLAY call: Redis runs each call in a few milliseconds (at most ~8,000: see REPLAY).
REPLAY_WINDOW = 2000

#: Seconds a probe (``probe_memory_policy``) waits to connect, and for the answer: `manage.py check` runs it
#: before every migrate and runserver, which must not wait long for a Redis that is down.
PROBE_TIMEOUT = 1.0

#: Seconds (at least) a relayed outbox row is remembered when its relay could not say its delete committed:
#: far longer than a relay takes to come back after a crash, a Redis or a database outage.
RELAY_MEMORY = 7 * 24 * 3600


def new_batch_id() -> str:
    return uuid.uuid4().hex


def new_token() -> str:
    """An attempt's fencing token."""
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
    raw: bytes  # the letter as stored in Redis: what names it (dead_letter_id) and finds it again (REMOVE_LETTERS)
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
    parts: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # unannotated in redis-py
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
        cuts=int(fields.get("cuts", 0)),
        failed_at=number("failed_at"),
        first_failure=number("first_failure"),
        last_status=int(status) if status else None,
        last_detail=fields.get("last_detail", ""),
        held=fields.get("held") == "1",
    )


def _fields(record: Record, inherited_only: bool = False) -> str:
    """The record as the JSON object of strings the scripts store (``size`` is the batch's length)."""
    values = asdict(record)
    del values["size"]
    if inherited_only:  # a piece starts its own attempts, and its own evidence, from scratch
        values = {k: values[k] for k in ("unanswered", "deaths", "cuts", "first_failure")}
    return json.dumps({k: _field(v) for k, v in values.items() if v is not None})


def _field(value: object) -> str:
    if isinstance(value, bool):  # before int: a bool is one
        return "1" if value else "0"
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _decode(pairs: Sequence[bytes]) -> dict[str, str]:
    return {pairs[i].decode(): pairs[i + 1].decode("utf-8", "replace") for i in range(0, len(pairs), 2)}


def _last(offset: int, limit: int) -> int:
    """LRANGE's stop index for ``limit`` entries from ``offset`` (``limit`` < 0: to the end)."""
    return offset + limit - 1 if limit > 0 else -1


def dead_letter_id(raw: bytes) -> str:
    """A short stable name for a dead letter as stored (pages and forms name letters by it)."""
    return hashlib.sha1(raw).hexdigest()[:20]


def _tombstone() -> str:
    # Dead letters start with their JSON header ("{"): this can never be one of them.
    return f"\x00bento-tombstone:{uuid.uuid4().hex}"


def _ascii_lower(text: str) -> str:
    # Lua's string.lower (scripts.REPLAY) folds ASCII only; the Python side must match the same letters.
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a page shows or a replay takes; empty fields match everything.

    ``reason``: text the reason contains (case-sensitive, as ``bento-tasks dead replay --reason``);
    ``status``: ``"none"`` (no HTTP status) or a status code; ``email``: text the event's email
    contains (ASCII case-insensitive). The same rules run in Python (pages) and in Lua (``scripts.REPLAY``).
    """

    reason: str = ""
    status: str = ""
    email: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("", "none") and not (self.status.isascii() and self.status.isdigit()):
            raise InvalidFilter(
                f"status filter {self.status!r} is not an HTTP status: give a code such as 503, 'none' for dead "
                "letters without one, or leave it empty for any status"
            )

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


# The Redis client as this module uses it: redis-py's synchronous client with decode_responses=False (every
# reply is bytes), and only the commands this module runs. redis-py's own annotations fit no one client: 5.x
# gives each command one signature for the sync and asyncio clients (``Awaitable[Any] | Any``), and 8.x,
# while it separates them, types replies ``bytes | str`` (decode_responses is not in the type) and has a
# pipeline's commands return replies rather than the pipeline. So ``Buffer.__init__`` casts its client
# once, to these, and the rest of the module is typed precisely, the same way on every supported redis-py.


class _Script(Protocol):
    def __call__(self, keys: Sequence[str] = ..., args: Iterable[bytes | str | float] = ...) -> Any:
        """The script's reply: Lua integers, strings and tables come back as int, bytes and lists."""


class _BytesPipeline(Protocol):
    """Commands queue on the pipeline and return it; ``execute`` returns their replies in order."""

    def execute(self) -> list[Any]: ...
    def get(self, name: str) -> _BytesPipeline: ...
    def hget(self, name: str, key: str) -> _BytesPipeline: ...
    def hgetall(self, name: str) -> _BytesPipeline: ...
    def hmget(self, name: str, keys: str, *args: str) -> _BytesPipeline: ...
    def lindex(self, name: str, index: int) -> _BytesPipeline: ...
    def llen(self, name: str) -> _BytesPipeline: ...
    def lrange(self, name: str, start: int, end: int) -> _BytesPipeline: ...
    def time(self) -> _BytesPipeline: ...
    def unlink(self, *names: str) -> _BytesPipeline: ...
    def zcard(self, name: str) -> _BytesPipeline: ...
    def zrange(self, name: str, start: int, end: int) -> _BytesPipeline: ...


class _BytesRedis(Protocol):
    def config_get(self, pattern: str = "*") -> Mapping[str, bytes | str]: ...
    def hgetall(self, name: str) -> dict[bytes, bytes]: ...
    def hincrby(self, name: str, key: str, amount: int = 1) -> int: ...
    def llen(self, name: str) -> int: ...
    def lrange(self, name: str, start: int, end: int) -> list[bytes]: ...
    def pipeline(self, transaction: bool = True) -> _BytesPipeline: ...
    def register_script(self, script: str) -> _Script: ...
    def rpush(self, name: str, *values: bytes | str) -> int: ...
    def set(self, name: str, value: bytes | str) -> bool | None: ...
    def time(self) -> tuple[int, int]: ...
    def zrange(self, name: str, start: int, end: int) -> list[bytes]: ...
    def zrangebyscore(
        self, name: str, min: float | str, max: float | str, start: int | None = None, num: int | None = None
    ) -> list[bytes]: ...


class Buffer:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        client = client or redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
        )
        self.redis = cast(_BytesRedis, client)  # the one place the client's type is asserted (see _BytesRedis)
        tag = "{" + settings.redis_prefix + "}"
        self.queue_key = f"{tag}:queue"
        self.inflight_key = f"{tag}:inflight"
        self.deferred_key = f"{tag}:deferred"
        self.dead_key = f"{tag}:dead"
        self.stats_key = f"{tag}:stats"
        self.limiter_key = f"{tag}:limiter"
        self.paused_key = f"{tag}:paused_until"
        self.probe_key = f"{tag}:probe"
        self.reports_key = f"{tag}:reports"
        self.last_flush_key = f"{tag}:last_flush"
        self.metrics_key = f"{tag}:metrics"
        self.posts_key = f"{tag}:posts"
        self._minute_prefix = f"{tag}:minute:"
        self.refusals_key = f"{tag}:refusals"
        self._batch_prefix = f"{tag}:batch:"
        self._meta_prefix = f"{tag}:meta:"
        self._relayed_prefix = f"{tag}:outbox:"
        self._sent_prefix = f"{tag}:sent:"
        # redis-py runs these by SHA and reloads them after a NOSCRIPT (e.g. a Redis restart)
        register = self.redis.register_script
        self._enqueue_once = register(scripts.ENQUEUE_ONCE)
        self._claim = register(scripts.CLAIM)
        self._begin = register(scripts.BEGIN)
        self._ack = register(scripts.ACK)
        self._retry = register(scripts.RETRY)
        self._split = register(scripts.SPLIT)
        self._bury = register(scripts.BURY)
        self._reject = register(scripts.REJECT)
        self._end_probe = register(scripts.END_PROBE)
        self._release = register(scripts.RELEASE)
        self._resume = register(scripts.RESUME)
        self._replay = register(scripts.REPLAY)
        self._record_post = register(scripts.RECORD_POST)
        self._record_depth = register(scripts.RECORD_DEPTH)
        self._remove_letters = register(scripts.REMOVE_LETTERS)
        self._relay = register(scripts.RELAY)
        self._forget = register(scripts.FORGET)

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

    def push_once(self, message_id: str, event: bytes, memory: float) -> bool:
        """Queue the event of a broker message unless that message was queued before (it was redelivered).

        The message's id is remembered for ``memory`` seconds at least (twice that at most): longer than the
        broker may take to deliver a message again. Returns whether the event was queued; BufferUnavailable
        if Redis cannot take it.
        """
        period = int(time.time() // memory)
        keys = [self.queue_key, f"{self._sent_prefix}{period}", f"{self._sent_prefix}{period - 1}"]
        digest = hashlib.blake2b(message_id.encode(), digest_size=12).digest()
        try:
            return bool(self._enqueue_once(keys=keys, args=[digest, math.ceil(2 * memory), event]))
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

    def held_deferred(self) -> int:
        """How many deferred batches are held (``policy.decide_held``): they wait for an accepted batch, not room.

        A held batch waits in the deferred set between looks; during a look (a moment) it counts as dispatched.
        """
        ids = self.redis.zrange(self.deferred_key, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hget(self.meta_key(batch_id.decode()), "held")
        return sum(1 for flag in pipe.execute() if flag == b"1") if ids else 0

    def mark_flushed(self) -> None:
        """Record that a flush ran, on Redis's clock (``status`` compares it with the same clock)."""
        self.redis.set(self.last_flush_key, repr(self.now()))

    def now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1_000_000

    # -- the post task -----------------------------------------------------------------------

    def begin(self, batch_id: str, token: str, interval: float, max_sleep: float) -> Begin:
        """Let the attempt ``token`` take the batch, or say why not (see scripts.BEGIN)."""
        s = self.settings
        keys = [*self._fenced(batch_id), self.deferred_key, self.limiter_key, self.paused_key]
        keys += [self.stats_key, self.probe_key]
        args: list[str | float] = [batch_id, token, s.lease_seconds, interval, max_sleep, horizon(s), SILENT_OUTAGE]
        reply = self._begin(keys=keys, args=args)
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
        left = int(self._reject(keys=[*self._fenced(batch_id), self.dead_key], args=args))
        if left == 0:  # nothing left to post: if this attempt was the probe, the next may probe
            self._end_probe(keys=[self.probe_key], args=[token])
        return left

    def health(self) -> Health:
        """When Bento last accepted a batch, and the current runs of identical refusals and of unanswered attempts."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time().hmget(self.stats_key, "accepted_at", "silent").hmget(self.refusals_key, "answer", "count")
        (seconds, micros), (accepted_at, silent), (answer, count) = pipe.execute()
        return Health(
            now=seconds + micros / 1_000_000,
            accepted_at=float(accepted_at) if accepted_at else None,
            refusal=answer.decode("utf-8", "replace") if answer else None,
            refusals=int(count or 0),
            silent=int(silent or 0),
        )

    def execute(
        self, batch_id: str, token: str, action: Action, recovering: bool = False, report: dict[str, int] | None = None
    ) -> Done:
        """Carry out ``action`` in one script, if the attempt ``token`` still owns the batch.

        ``recovering``: a flush acts for an attempt whose lease ran out (its token, or '' when no attempt
        had taken the batch). ``report``: for ACK, Bento's answer (size, results, failed).
        """
        try:
            done = self._execute(batch_id, token, action, recovering, report)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError) as exc:
            # Safe to call again: a step that did run left the batch no longer owned by this token.
            raise BufferUnavailable(f"could not record the outcome in Redis: {exc}") from exc
        if action.kind is not Kind.ACK and token:
            try:
                self._end_probe(keys=[self.probe_key], args=[token])
            except redis.RedisError:
                pass  # the outcome is recorded; the probe key lapses with the batch's lease
        return done

    def _execute(
        self, batch_id: str, token: str, action: Action, recovering: bool, report: dict[str, int] | None
    ) -> Done:
        s = self.settings
        fence = [batch_id, token, "1" if recovering else "0"]
        # `silent` counts the run of unanswered attempts, which ACK ends.
        counted = (("unanswered", action.unanswered), ("silent", action.unanswered), ("worker_deaths", action.deaths))
        counts = json.dumps({k: v for k, v in counted if v})
        if action.kind is Kind.ACK:
            answer = report or {"batch_size": 0, "results": 0, "failed": 0}
            note = json.dumps({"time": _utc_now(), **answer})
            keys = [*self._fenced(batch_id), self.stats_key, self.reports_key, self.refusals_key, self.probe_key]
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

    @_reachable
    def memory_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None where the server refuses CONFIG (managed Redis often does)."""
        try:
            reply = self.redis.config_get("maxmemory-policy")
        except redis.ResponseError:
            return None
        value = reply.get("maxmemory-policy")
        return value.decode() if isinstance(value, bytes) else value

    @_reachable
    def status(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue_key).zrange(self.inflight_key, 0, -1).zrange(self.deferred_key, 0, -1)
        pipe.llen(self.dead_key).hgetall(self.stats_key).get(self.paused_key).time()
        pipe.lindex(self.queue_key, 0).llen(self.reports_key).get(self.last_flush_key)
        queued, dispatched, deferred, dead, stats, paused, (secs, micros), oldest, reports, flushed = pipe.execute()
        now = secs + micros / 1e6
        batch_ids = [*dispatched, *deferred]
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.llen(self.batch_key(batch_id.decode())).hget(self.meta_key(batch_id.decode()), "held")
        replies = pipe.execute() if batch_ids else []
        in_flight = sum(replies[0::2])
        held = sum(1 for flag in replies[1::2] if flag == b"1")
        paused_until = float(paused) if paused and float(paused) > now else None
        return {
            "queued": queued,
            "in_flight": in_flight,
            "dead": dead,
            "batches_in_flight": len(batch_ids),
            "batches_deferred": len(deferred),
            "batches_held": held,
            "delivered": int(stats.get(b"delivered", 0)),
            "failed": int(stats.get(b"failed", 0)),
            "batches_delivered": int(stats.get(b"batches", 0)),
            "unanswered": int(stats.get(b"unanswered", 0)),
            "worker_deaths": int(stats.get(b"worker_deaths", 0)),
            "failure_reports": reports,
            "oldest_queued_age": _age(oldest, now),
            "last_flush_age": round(max(0.0, now - float(flushed)), 3) if flushed else None,
            "paused_until": (
                dt.datetime.fromtimestamp(paused_until, dt.timezone.utc).isoformat(timespec="seconds")
                if paused_until
                else None
            ),
            "maxmemory_policy": self.memory_policy(),
        }

    @_reachable
    def failure_reports(self, limit: int = -1, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """How many of Bento's answers that counted failed events are kept (the last 1000), and ``limit`` of them
        (< 0: all) from ``offset``, newest first."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.llen(self.reports_key).lrange(self.reports_key, offset, _last(offset, limit))
        total, raws = pipe.execute()
        return total, [json.loads(raw) for raw in raws] if limit else []  # LRANGE has no empty range

    @_reachable
    def dead_letters(self, limit: int = -1) -> list[DeadLetter]:
        """Dead letters, oldest first (``limit`` < 0: all)."""
        raws = self.redis.lrange(self.dead_key, 0, _last(0, limit)) if limit else []
        return [_parse_dead_letter(raw) for raw in raws]

    @_reachable
    def replay(self, where: DeadLetterFilter) -> int:
        """Put every dead letter matching ``where`` (``DeadLetterFilter()``: all) back on the queue; returns how many.

        One pass over the list, in windows of REPLAY_WINDOW letters (see scripts.REPLAY): linear, whatever
        the mix, and each call holds Redis for milliseconds.
        """
        args = [where.reason, where.status, _ascii_lower(where.email)]
        left = self.redis.llen(self.dead_key)
        moved = 0
        while left > 0:
            window = min(REPLAY_WINDOW, left)
            examined, put_back = self._replay(keys=[self.dead_key, self.queue_key], args=[window, *args])
            moved += put_back
            left -= window
            if examined < window:  # emptied meanwhile (a purge, another replay)
                break
        return moved

    @_reachable
    def purge_dead(self) -> int:
        pipe = self.redis.pipeline()
        pipe.llen(self.dead_key).unlink(self.dead_key)
        count, _ = pipe.execute()
        return int(count)

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

    # -- operations: what the tasks record -------------------------------------------------------

    def record_post(self, sample: telemetry.PostSample, now: float | None = None) -> None:
        """Count one POST: counters and histogram, this minute's series, the recent POSTs list.

        One script (scripts.RECORD_POST), by the post task after each POST. The minute comes from this
        host's clock: a few seconds of skew moves a sample to the next minute of a chart, nothing more.
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
        counters = sample.counter_increments()
        args: list[str | float] = [sample.seconds, telemetry.SERIES_TTL, telemetry.RECENT_POSTS]
        args += [json.dumps(post, separators=(",", ":")), len(counters)]
        for name, increment in (*counters.items(), *sample.minute_increments().items()):
            args += [name, increment]
        self._record_post(keys=[self.metrics_key, minute_key, self.posts_key], args=args)

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


def probe_memory_policy(settings: Settings, timeout: float = PROBE_TIMEOUT) -> str | None:
    """``Buffer.memory_policy`` over one connection of its own, closed before returning: connecting and the answer
    each wait at most ``timeout`` seconds, tried once (redis-py would retry a failed connect 3 times). For checks
    that run where Redis may be down; BufferUnavailable when it cannot be read in time."""
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return Buffer(settings, client).memory_policy()
    finally:
        client.close()


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
