"""One campaign: start the stack and the producers, inject the planned faults, heal, wait for the drain,
gather what Bento and Redis hold, check it.
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import itertools
import json
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kombu import Connection

from bento_tasks.policy import copy_bound

from .check import Observed, Post, Verdict, check
from .faults import FollowUp, Injector
from .plan import Fault, plan
from .producers import Ledger, Producer
from .stack import Stack

#: The stated drain time: after healing, nothing may be left in the buffer or the broker's queue after this.
#: The slowest faults to resolve once healed: a batch of a killed worker waits out its 8 s lease, a restarted
#: worker takes a few seconds to start, a backlog drains at the 600 POSTs a minute of the settings.
DRAIN_LIMIT = 60.0
#: The queue counts as drained once nothing changed for this long (no POST, no message, nothing queued).
QUIET = 2.0
_INVALID = re.compile(rb"invalid\d+@chaos\.test")
_RECEIVED = re.compile(rb"Task bento_tasks\.send_event\[([0-9a-f-]+)\] received")


@dataclass(frozen=True)
class Config:
    seed: int
    minutes: float
    workers: int = 2
    concurrency: int = 2
    rate: float = 30.0  # events a second, half through track(), half through send_event.delay()
    drain_limit: float = DRAIN_LIMIT
    directory: Path | None = None


@dataclass
class Outcome:
    config: Config
    observed: Observed
    verdict: Verdict
    injector: Injector
    ledger: Ledger
    status: dict[str, Any]
    held_messages: int
    restored: Counter[str]  # unacknowledged messages put back at the end (by task), as the visibility_timeout would
    directory: Path
    seconds: float  # of faults


def run(config: Config, say: Callable[[str], None] = print) -> Outcome:
    directory = config.directory or Path(tempfile.mkdtemp(prefix="bento-chaos-"))
    seconds = config.minutes * 60
    faults = plan(config.seed, seconds, config.workers)
    say(f"chaos: seed {config.seed}, {len(faults)} faults over {seconds:.0f} s; logs in {directory}")
    stack = Stack(directory, config.workers, config.concurrency).start()
    try:
        ledger = Ledger()
        injector = Injector(stack, ledger, random.Random(config.seed + 1))
        runner = _Runner(stack, injector)
        producers = [Producer(ledger, "track", config.rate / 2), Producer(ledger, "delay", config.rate / 2)]
        for producer in producers:
            producer.start()
        runner.run(faults, seconds)
        for producer in producers:
            producer.stop()
        for producer in producers:
            producer.join(30)
        say(f"chaos: faults done ({sum(injector.injected.values())} injected); healing, waiting for the drain")
        runner.heal()
        drain = runner.wait_for_drain(config.drain_limit)
        # What the broker's visibility_timeout does an hour later, now: messages killed workers had taken
        # go back to the queue, and their tasks run (again, for those that had run).
        restored = _restore_unacked(stack)
        if restored and drain is not None and runner.wait_for_drain(config.drain_limit) is None:
            drain = None
        say(f"chaos: {sum(restored.values())} unacknowledged message(s) restored, as after the visibility_timeout")
        observed, status, held_messages = _observe(stack, ledger, injector, runner, drain, config.drain_limit)
    finally:
        stack.stop()
    _save(observed, directory / "observed.json")
    verdict = check(observed)
    return Outcome(config, observed, verdict, injector, ledger, status, held_messages, restored, directory, seconds)


class _Runner:
    """Runs faults and their follow-ups at their times, and restarts processes that exit by themselves."""

    def __init__(self, stack: Stack, injector: Injector) -> None:
        self.stack, self.injector = stack, injector
        self.pending: list[tuple[float, int, FollowUp]] = []
        self.order = itertools.count()
        self.unexpected: list[str] = []
        self.checked_at = 0.0

    def run(self, faults: list[Fault], seconds: float) -> None:
        start = time.monotonic()
        queue = [(start + fault.at, next(self.order), fault) for fault in faults]
        heapq.heapify(queue)
        end = start + seconds
        while time.monotonic() < end:
            self.supervise()
            now = time.monotonic()
            if self.pending and self.pending[0][0] <= now:
                _, _, follow_up = heapq.heappop(self.pending)
                self._follow(follow_up)
            elif queue and queue[0][0] <= now:
                _, _, fault = heapq.heappop(queue)
                for follow_up in self.injector.inject(fault):
                    heapq.heappush(self.pending, (now + follow_up.after, next(self.order), follow_up))
            else:
                time.sleep(0.02)

    def _follow(self, follow_up: FollowUp) -> None:
        try:
            follow_up.action()
        except Exception as exc:
            self.injector.errors.append(f"{follow_up.label}: {type(exc).__name__}: {exc}")

    def heal(self) -> None:
        """Every pending follow-up now, then whatever else is needed for a healthy stack."""
        while self.pending:
            self._follow(heapq.heappop(self.pending)[2])
        self.stack.fake.heal()
        self.supervise(force=True)

    def supervise(self, force: bool = False) -> None:
        """Restart any process that exited though the campaign did not kill it, and say so."""
        now = time.monotonic()
        if not force and now - self.checked_at < 0.5:
            return
        self.checked_at = now
        down = self.injector.down
        for slot in self.stack.workers:
            if not slot.running() and f"w{slot.index}" not in down:
                assert slot.current is not None and slot.current.process is not None
                tail = slot.current.output().strip().splitlines()[-3:]
                self.unexpected.append(
                    f"worker w{slot.index}-{slot.incarnation} exited ({slot.current.process.returncode}): "
                    + " | ".join(tail)
                )
                slot.start()
        beat = self.stack.beat
        if beat is not None and not beat.running() and "beat" not in down:
            assert beat.process is not None
            self.unexpected.append(f"the beat exited ({beat.process.returncode}), see {beat.log_path}")
            self.stack.beat = self.stack.new_beat().start()
        process = self.stack.redis.process
        if process is not None and process.poll() is not None:
            self.unexpected.append(f"redis-server exited ({process.returncode})")
            self.stack.redis.process = None
            self.stack.redis.start()

    def wait_for_drain(self, limit: float) -> float | None:
        """Seconds from healing until the buffer and the broker's queue were empty and stayed so; None after limit."""
        healed = time.monotonic()
        quiet_since: float | None = None
        last: tuple[Any, ...] | None = None
        while time.monotonic() - healed < limit + QUIET:
            self.supervise()
            now = time.monotonic()
            state = self._state()
            if state is not None and state[0] and state == last:
                quiet_since = quiet_since or now
                if now - quiet_since >= QUIET:
                    drained = quiet_since - healed
                    return drained if drained <= limit else None
            else:
                quiet_since = None
            last = state
            time.sleep(0.25)
        return None

    def _state(self) -> tuple[Any, ...] | None:
        try:
            status = self.stack.buffer().status()
            ready, unacked = _broker_messages(self.stack)
        except Exception:
            return None
        idle = status["queued"] == 0 and status["in_flight"] == 0 and not ready
        return (idle, frozenset(unacked), len(self.stack.fake.requests), status["dead"])


def _broker_messages(stack: Stack) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The broker's send_event and post_batch messages: ready in the queue, and unacked (by delivery tag)."""
    client = redis.Redis.from_url(stack.redis.url(1))
    try:
        ready = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
        unacked = {tag.decode(): json.loads(raw)[0] for tag, raw in client.hgetall("unacked").items()}
    finally:
        client.close()

    def ours(message: dict[str, Any]) -> bool:
        return message.get("headers", {}).get("task") in ("bento_tasks.send_event", "bento_tasks.post_batch")

    return [m for m in ready if ours(m)], {tag: m for tag, m in unacked.items() if ours(m)}


def _restore_unacked(stack: Stack) -> Counter[str]:
    """Put every unacknowledged message back on its queue with kombu's own restore, as it does for a message
    older than the visibility_timeout; returns how many there were, by task."""
    client = redis.Redis.from_url(stack.redis.url(1))
    try:
        tasks = Counter(json.loads(raw)[0]["headers"]["task"] for raw in client.hvals("unacked"))
    finally:
        client.close()
    if tasks:
        with Connection(stack.redis.url(1), transport_options={"visibility_timeout": 0}) as connection:
            connection.default_channel.qos.restore_visible(num=None)
    return tasks


def _event_of_message(message: dict[str, Any]) -> str | None:
    if message["headers"]["task"] != "bento_tasks.send_event":
        return None
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    email = kwargs.get("email")
    return email if isinstance(email, str) else None


def _save(observed: Observed, path: Path) -> None:
    """Everything the checks saw, for a post-mortem of a failed run (``check.check`` can be re-run on it)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(type(value).__name__)

    path.write_text(json.dumps(dataclasses.asdict(observed), default=plain))


def _received(directory: Path) -> frozenset[str]:
    """Ids of the send_event messages some worker received, from every worker's log."""
    ids: set[str] = set()
    for log in directory.glob("w*.log"):
        ids.update(match.decode() for match in _RECEIVED.findall(log.read_bytes()))
    return frozenset(ids)


def _name(event: bytes) -> str:
    try:
        email = json.loads(event)["email"]
        if isinstance(email, str):
            return email
    except (ValueError, KeyError, TypeError):
        pass
    found = _INVALID.search(event)
    return found.group().decode() if found else event[:60].decode("utf-8", "replace")


def _observe(
    stack: Stack, ledger: Ledger, injector: Injector, runner: _Runner, drain: float | None, limit: float
) -> tuple[Observed, dict[str, Any], int]:
    buffer = stack.buffer()
    status = buffer.status()
    requests = stack.fake.requests
    posts = [
        Post(tuple(event["email"] for event in r.events), r.answer, r.client[1], r.received_at)
        for r in requests
        if r.events
    ]
    dead = [(_name(letter.event), letter.reason) for letter in buffer.dead_letters()]
    ready, unacked = _broker_messages(stack)
    held_messages = [m for m in (*ready, *unacked.values()) if m["headers"]["task"] == "bento_tasks.send_event"]
    held = {email for m in held_messages if (email := _event_of_message(m))}
    stuck_raw = list(buffer.redis.lrange(buffer.queue_key, 0, -1))
    batch_ids = [*buffer.redis.zrange(buffer.inflight_key, 0, -1), *buffer.redis.zrange(buffer.deferred_key, 0, -1)]
    for batch_id in batch_ids:
        stuck_raw += buffer.redis.lrange(buffer.batch_key(batch_id.decode()), 0, -1)
    with ledger.lock:
        sent, unconfirmed = dict(ledger.sent), frozenset(ledger.unconfirmed)
        sent_at, task_ids = dict(ledger.sent_at), dict(ledger.task_ids)
    observed = Observed(
        sent=sent,
        unconfirmed=unconfirmed,
        posts=posts,
        refused_bodies=sum(1 for r in requests if r.status == 400),
        dead=dead,
        held=frozenset(held),
        stuck=frozenset(_name(raw) for raw in stuck_raw),
        delivered_stat=status["delivered"],
        kills=list(injector.kills),
        bound=copy_bound(stack.settings),
        drain_seconds=drain,
        drain_limit=limit,
        unexpected_exits=list(runner.unexpected),
        sent_at=sent_at,
        task_ids=task_ids,
        received=_received(stack.directory),
        takedowns=list(injector.takedowns),
    )
    return observed, status, len(held_messages)
