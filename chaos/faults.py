"""Fault injectors: each kind of ``plan.Fault`` done to the real stack, and the evidence the checker needs.

A fault with a duration (a worker killed and restarted later, Redis down, a second beat, slow answers)
returns follow-ups: what heals it, and when. Healing runs every follow-up still pending at once.

Kills leave evidence (``check.Kill``): just before the SIGKILL, the local ports of the killed processes'
connections to the fake (which POSTs they sent), and right after it, the events of every batch an attempt
owns in Redis (whether those POSTs had been acknowledged). See ``check`` for why that makes the duplicate
check exact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import redis

from bento_tasks import post_batch
from bento_tasks.testing import RecordedRequest

from .check import Kill
from .plan import TRICKLE_PAST, TRICKLE_WITHIN, Fault
from .producers import Ledger
from .stack import Stack, Worker

#: How long a kill's snapshot of Redis is retried while Redis is down (well within a lease).
SNAPSHOT_PATIENCE = 4.0


@dataclass(frozen=True)
class FollowUp:
    after: float  # seconds after the fault
    label: str
    action: Callable[[], None]


def invalid_entry(marker: str, shape: int) -> bytes:
    """A raw queue entry that is not a valid Bento event, carrying ``marker`` (an email-like name)."""
    shapes = (
        {"type": "chaos_invalid", "email": marker, "fields": {"nested": {"not": "flat"}}},
        {"type": "", "email": marker},
        {"type": "chaos_invalid", "email": marker, "date": "yesterday"},
        {"type": "chaos_invalid", "email": marker, "unknown_key": 1},
    )
    if shape < len(shapes):
        return json.dumps(shapes[shape]).encode()
    return f"not JSON at all: {marker}".encode()


def events_of(raws: list[bytes]) -> frozenset[str]:
    emails = set()
    for raw in raws:
        try:
            emails.add(json.loads(raw)["email"])
        except (ValueError, KeyError, TypeError):
            continue
    return frozenset(emails)


class Injector:
    def __init__(self, stack: Stack, ledger: Ledger, rng: random.Random) -> None:
        self.stack, self.ledger, self.rng = stack, ledger, rng
        self.buffer = stack.buffer()
        self.kills: list[Kill] = []
        self.takedowns: list[tuple[float, float]] = []  # a worker's main process or Redis: SIGKILL sent, reaped
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.extras: Counter[str] = Counter()  # messages duplicated, entries pushed, ...
        self.errors: list[str] = []
        self.down: set[str] = set()  # processes this campaign took down and has not brought back yet

    def inject(self, fault: Fault) -> list[FollowUp]:
        try:
            follow_ups = getattr(self, f"_{fault.kind}")(**fault.params)
        except Exception as exc:
            self.errors.append(f"{fault.kind} at {fault.at:.1f}s: {type(exc).__name__}: {exc}")
            return []
        if follow_ups is None:
            self.skipped[fault.kind] += 1
            return []
        self.injected[fault.kind] += 1
        return list(follow_ups)

    # -- processes -------------------------------------------------------------------------------

    def _pool_child_kill(self, worker: int, child: int) -> list[FollowUp] | None:
        slot = self.stack.workers[worker]
        if not slot.running() or slot.pid is None:
            return None
        children = sorted(psutil.Process(slot.pid).children(), key=lambda p: p.pid)
        if not children:
            return None
        target = children[child % len(children)]
        self._kill([target], lambda: os.kill(target.pid, signal.SIGKILL))
        return []  # the worker forks a new pool child by itself

    def _kill_while_posting(self) -> list[FollowUp] | None:
        """SIGKILL the pool child whose POST Bento has just recorded, before it gets the answer."""
        armed = threading.Lock()

        def kill_the_poster(request: RecordedRequest) -> None:
            if not request.events or not armed.acquire(blocking=False):
                return
            self.stack.fake.on_request(None)
            poster = self._poster(request.client[1])
            if poster is not None:
                self._kill([poster], lambda: os.kill(poster.pid, signal.SIGKILL))
                self.extras["POSTs whose pool child was killed"] += 1

        self.stack.fake.on_request(kill_the_poster)
        return [FollowUp(10.0, "stop waiting for a POST to kill", lambda: self.stack.fake.on_request(None))]

    def _poster(self, port: int) -> psutil.Process | None:
        """The worker process holding the client end of a connection to the fake."""
        for slot in self.stack.workers:
            if not slot.running() or slot.pid is None:
                continue
            try:
                for child in psutil.Process(slot.pid).children():
                    if any(c.laddr and c.laddr.port == port for c in child.net_connections("tcp")):
                        return child
            except psutil.Error:
                continue
        return None

    def _worker_kill(self, worker: int, restart_after: float) -> list[FollowUp] | None:
        slot = self.stack.workers[worker]
        if not slot.running() or slot.pid is None:
            return None
        main = psutil.Process(slot.pid)
        self.down.add(f"w{worker}")
        self.takedowns.append(self._kill([main, *main.children(recursive=True)], slot.kill))
        return [FollowUp(restart_after, f"restart worker w{worker}", lambda: self._restart(slot))]

    def _restart(self, slot: Worker) -> None:
        if not slot.running():
            slot.start()
        self.down.discard(f"w{slot.index}")

    def _kill(self, processes: list[psutil.Process], kill: Callable[[], None]) -> tuple[float, float]:
        """SIGKILL ``processes`` (through ``kill``) and note the evidence; returns when the signal went and when
        ``kill`` returned (for a whole worker: its main process reaped, its connections closed)."""
        ports = set()
        for process in processes:
            try:
                connections = process.net_connections("tcp")
            except psutil.Error:
                continue  # exited meanwhile
            ports |= {c.laddr.port for c in connections if c.raddr and c.raddr.port == self.stack.fake_port}
        at = time.time()
        kill()
        done = time.time()
        self.kills.append(Kill(at, frozenset(ports), self._owned()))
        return at, done

    def _owned(self) -> tuple[frozenset[str], ...] | None:
        """The events of every batch an attempt owns now; None if Redis stays unreachable."""
        give_up = time.monotonic() + SNAPSHOT_PATIENCE
        buffer = self.buffer
        while True:
            try:
                ids = [raw.decode() for raw in buffer.redis.zrange(buffer.inflight_key, 0, -1)]
                pipe = buffer.redis.pipeline(transaction=True)
                for batch_id in ids:
                    pipe.hget(buffer.meta_key(batch_id), "owner").lrange(buffer.batch_key(batch_id), 0, -1)
                replies = pipe.execute()
                return tuple(events_of(raws) for owner, raws in zip(replies[::2], replies[1::2], strict=True) if owner)
            except redis.RedisError:
                if time.monotonic() > give_up:
                    return None
                time.sleep(0.1)

    def _beat_kill(self, restart_after: float) -> list[FollowUp] | None:
        beat = self.stack.beat
        if beat is None or not beat.running():
            return None
        self.down.add("beat")
        beat.kill()
        return [FollowUp(restart_after, "restart the beat", self._restart_beat)]

    def _restart_beat(self) -> None:
        if self.stack.beat is None or not self.stack.beat.running():
            self.stack.beat = self.stack.new_beat().start()
        self.down.discard("beat")

    def _second_beat(self, seconds: float) -> list[FollowUp] | None:
        if self.stack.second_beat is not None and self.stack.second_beat.running():
            return None
        self.stack.second_beat = self.stack.new_beat().start()
        return [FollowUp(seconds, "stop the second beat", self._stop_second_beat)]

    def _stop_second_beat(self) -> None:
        if self.stack.second_beat is not None:
            self.stack.second_beat.kill()

    def _redis_kill(self, down_for: float) -> list[FollowUp] | None:
        if self.stack.redis.process is None:
            return None
        self.down.add("redis")
        at = time.time()
        self.stack.redis.stop(signal.SIGKILL)
        self.takedowns.append((at, time.time()))
        return [FollowUp(down_for, "restart Redis (AOF)", self._restart_redis)]

    def _restart_redis(self) -> None:
        if self.stack.redis.process is None:
            self.stack.redis.start()
        self.down.discard("redis")

    # -- messages and entries ----------------------------------------------------------------------

    def _duplicate_messages(self, batches: int, copies: int, late: float) -> list[FollowUp] | None:
        ids = [raw.decode() for raw in self.buffer.redis.zrange(self.buffer.inflight_key, 0, -1)]
        if not ids:
            return None
        for batch_id in self.rng.sample(ids, min(batches, len(ids))):
            for _ in range(copies):
                post_batch.apply_async((batch_id,), countdown=self.rng.uniform(0, late))
                self.extras["post_batch messages duplicated"] += 1
        return []

    def _invalid_entries(self, count: int, shape: int) -> list[FollowUp] | None:
        markers = [self.ledger.name("invalid") for _ in range(count)]
        self.buffer.push(*(invalid_entry(marker, (shape + i) % 5) for i, marker in enumerate(markers)))
        self.ledger.invalid.extend(markers)
        self.extras["invalid entries pushed"] += count
        return []

    def _poison_event(self, via: str) -> list[FollowUp] | None:
        if not self.ledger.send_poison(via):
            self.extras["poison events refused by the producer call"] += 1
        return []

    # -- Bento ---------------------------------------------------------------------------------------

    def _bento_5xx(self, status: int, mode: str, times: int = 1, seconds: float = 0.0) -> list[FollowUp] | None:
        if mode == "burst":
            self.stack.fake.fail(status, times=times)
        else:
            self.stack.fake.fail_for(seconds, status=status)
        return []

    def _bento_429(self, times: int, retry_after: int) -> list[FollowUp] | None:
        self.stack.fake.fail(429, times=times, retry_after=str(retry_after))
        return []

    def _bento_slow(self, delay: float, seconds: float) -> list[FollowUp] | None:
        self.stack.fake.delay = delay
        return [FollowUp(seconds, "answer at once again", self._fast)]

    def _fast(self) -> None:
        self.stack.fake.delay = 0.0

    def _bento_trickle(self, mode: str, times: int, headers: str) -> list[FollowUp] | None:
        deadline = self.stack.settings.post_deadline
        seconds = deadline * (TRICKLE_PAST if mode == "past" else TRICKLE_WITHIN)
        self.stack.fake.trickle(seconds, headers=headers == "yes", times=times)
        return []

    def _bento_hang_up(self, times: int) -> list[FollowUp] | None:
        self.stack.fake.hang_up(times)
        return []

    def _bento_down(self, seconds: float) -> list[FollowUp] | None:
        if "bento" in self.down:
            return None
        self.down.add("bento")
        self.stack.fake.stop()
        return [FollowUp(seconds, "bring Bento back", self._bento_up)]

    def _bento_up(self) -> None:
        if "bento" in self.down:
            self.stack.fake.start()
        self.down.discard("bento")
