"""Shared pieces of the benchmarks: a private stack (Redis + fake Bento), workers, events, statistics.

Nothing here touches the shared Redis on 6379: every run starts its own ``redis-server``.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

from bento_tasks import conf
from bento_tasks.testing import CeleryWorker, FakeBento, RedisServer

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = Path(tempfile.mkdtemp(prefix="bento-bench-"))
# The buffer's keys under the default BENTO_REDIS_PREFIX (see bento_tasks/buffer.py).
QUEUE_KEY, INFLIGHT_KEY, DEFERRED_KEY = "{bento}:queue", "{bento}:inflight", "{bento}:deferred"

# Backlog events happened a microsecond apart, dated as track() dates them.
_EPOCH = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)


def event_date(n: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=n)


def bento_event(n: int) -> dict[str, Any]:
    """Event number ``n`` of a realistic mix: Bento's three documented examples in rotation, each made
    unique by its email (and order id), ~180 bytes of JSON on average."""
    email = f"user{n}@example.com"
    kind = n % 3
    if kind == 0:
        return {"type": "$completed_onboarding", "email": email}
    if kind == 1:
        return {"type": "$completed_onboarding", "email": email, "fields": {"first_name": "Jesse", "last_name": "P"}}
    return {
        "type": "$purchase",
        "email": email,
        "fields": {"first_name": "Jesse"},
        "details": {
            "unique": {"key": f"order-{n}"},
            "value": {"currency": "USD", "amount": 8000},
            "cart": {"items": [{"product_sku": "SKU123", "product_name": "Test", "quantity": 1}]},
        },
    }


def encoded_events(count: int, start: int = 0) -> list[bytes]:
    """The backlog as ``track()`` would have queued it (compact JSON with a date), built without it for speed."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    return [dumps({**bento_event(n), "date": event_date(n).isoformat()}).encode() for n in range(start, start + count)]


def event_number(event: dict[str, Any]) -> int:
    return int(event["email"][4 : event["email"].index("@")])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """How noisy repeated runs were: how many, and the lowest and highest."""
    if len(values) < 2:
        return "1 run"
    return f"{len(values)} runs, {fmt.format(min(values))} to {fmt.format(max(values))}"


class Stack:
    """A private redis-server (buffer on db 0, broker on db 1) and a fake Bento."""

    def __init__(self, rate_limit_per_minute: int | None = None) -> None:
        self.redis_server = RedisServer(tempfile.mkdtemp(dir=WORKDIR, prefix="redis-")).start()
        self.fake = FakeBento("bench-site", "bench-pub", "bench-secret", rate_limit_per_minute).start()
        self.redis = redis.Redis.from_url(self.redis_server.url(0))

    def env(self, **overrides: str) -> dict[str, str]:
        """The worker's environment: settings pointing at this stack (BENTO_* as in the README)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_", "CELERY_"))}
        env.update(
            BENTO_SITE_UUID=self.fake.site_uuid,
            BENTO_PUBLISHABLE_KEY=self.fake.publishable_key,
            BENTO_SECRET_KEY=self.fake.secret_key,
            BENTO_API_URL=self.fake.url,
            BENTO_REDIS_URL=self.redis_server.url(0),
            CELERY_BROKER_URL=self.redis_server.url(1),
        )
        env.update(overrides)
        return env

    def use_in_this_process(self, **overrides: str) -> None:
        """Point this process's bento_tasks (track, send_event.delay) and Celery apps at the stack.

        Celery takes CELERY_BROKER_URL from the environment before its configuration, so that is what
        is set; an app that already connected to an earlier stack must be ``close()``d.
        """
        os.environ.update({k: v for k, v in self.env(**overrides).items() if k.startswith(("BENTO_", "CELERY_"))})
        conf.reset_settings()
        from bento_tasks.celery import app

        app.close()
        app.set_current()

    def fill(self, raws: Sequence[bytes]) -> None:
        """Put a whole backlog on the queue at once (RENAME is atomic: no flush sees half of it)."""
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(raws), 10_000):
            pipe.rpush("bench:fill", *raws[i : i + 10_000])
        pipe.execute()
        self.redis.rename("bench:fill", QUEUE_KEY)

    def settled(self) -> bool:
        """Nothing queued or in flight: every batch was acknowledged, so no late duplicate can follow."""
        return not (self.redis.llen(QUEUE_KEY) or self.redis.zcard(INFLIGHT_KEY) or self.redis.zcard(DEFERRED_KEY))

    def close(self) -> None:
        self.fake.stop()
        self.redis_server.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Worker(CeleryWorker):
    """A ``celery -A APP worker`` with its CPU time and memory at hand; -l warning, so it logs no task."""

    def __init__(self, env: dict[str, str], app: str = "bento_tasks", concurrency: int = 2, beat: bool = True) -> None:
        super().__init__(
            app,
            env,
            cwd=ROOT,
            directory=WORKDIR,
            name=f"bench{time.monotonic_ns()}",
            beat=beat,
            concurrency=concurrency,
            loglevel="warning",
        )
        self.args.append("--without-heartbeat")
        self.start()
        self.ps = psutil.Process(self.process.pid)
        self.children = concurrency + (1 if beat else 0)

    def wait_idle(self) -> None:
        """Wait until the worker has started and gone quiet, so its start-up is not counted as work.

        At ``-l warning`` (info would log every task) there is no "ready" line: wait for the pool and
        beat processes, then for the start-up burst of CPU to end.
        """
        deadline = time.monotonic() + 60
        last = -1.0
        while len(self.ps.children(recursive=True)) < self.children or self.cpu_seconds() - last > 0.02:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.output()}")
            last = self.cpu_seconds()
            time.sleep(0.3)

    def processes(self) -> list[psutil.Process]:
        return [self.ps, *self.ps.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the worker and its pool and beat processes so far."""
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def peak_rss(self) -> int:
        """Sum over the worker's processes of each one's peak resident memory (VmHWM), bytes."""
        total = 0
        for proc in self.processes():
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
            total += int(kb) * 1024
        return total


@contextmanager
def worker(env: dict[str, str], **kwargs: Any) -> Iterator[Worker]:
    started = Worker(env, **kwargs)
    try:
        yield started
    finally:
        started.stop()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off in this process while a drain runs.

    The endpoints (FakeBento, SegmentEndpoint) run in this process, on the same two cores as the client
    they time. FakeBento keeps every event it accepts, as dicts (the exactly-once check reads them back),
    and the collector walking that growing heap took about 1.2 µs of CPU per event of a 200,000-event
    drain (timed with gc.callbacks), CPU the client under test then lacked, and its pauses held up the
    fake's answers (measured: 66,110 against 76,490 events/s, bench/RESULTS.md). Segment's endpoint keeps only
    strings, which the collector does not walk: the pause removes a cost only our side paid, a cost of
    the fixture, not of the client. Reference cycles (a few per stack) wait until it is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def delivery_span(fake: FakeBento, count: int, timeout: float) -> float:
    """Seconds from the fake's first request to the moment it had accepted ``count`` events."""
    fake.wait_for_events(count, timeout)
    done = time.time()
    return done - fake.requests[0].received_at


def check_exactly_once(fake: FakeBento, count: int) -> list[str]:
    """Problems with what the fake received: each of events 0..count-1 exactly once, nothing else."""
    numbers = [event_number(event) for event in fake.events]
    problems = []
    if len(numbers) != count:
        problems.append(f"{len(numbers)} events delivered, expected {count}")
    duplicates = len(numbers) - len(set(numbers))
    if duplicates:
        problems.append(f"{duplicates} duplicates")
    missing = count - len(set(numbers) & set(range(count)))
    if missing:
        problems.append(f"{missing} events lost")
    refused = len(fake.requests) - fake.count_status(200)
    if refused:
        problems.append(f"{refused} requests refused by the fake")
    return problems
