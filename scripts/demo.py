"""``make demo``: the whole pipeline on this machine, against the fake Bento, never a real account.

Starts the fake Bento and a ``celery -A bento_tasks worker -B``, sends Bento's three example
events plus thousands of generated ones through both ``send_event.delay()`` and ``track()``,
shows progress while they drain under the default rate limit, and prints a summary.
Exits non-zero if any valid event was not delivered.

Redis: ``BENTO_REDIS_URL`` if set (with a key prefix and broker queue of its own, removed at
the end), else a private ``redis-server`` on a free port.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# What a buggy producer that bypasses track() might push: the flush must dead-letter these.
BROKEN_ENTRIES = [b'{"type": "$signup", "email": "not-an-address"}', b"{truncated json"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="generated events, half per path (default 10000)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for delivery")
    args = parser.parse_args()

    from bento_tasks.testing import EXAMPLE_EVENTS, CeleryWorker, FakeBento, RedisServer

    run_id = uuid.uuid4().hex[:8]
    redis_server = None
    if os.environ.get("BENTO_REDIS_URL"):
        redis_url = os.environ["BENTO_REDIS_URL"]
        broker_url = os.environ.get("CELERY_BROKER_URL", redis_url)
        print(f"Using the Redis at BENTO_REDIS_URL (keys under {{bento-demo-{run_id}}}, removed at the end)")
    else:
        redis_server = RedisServer().start()
        redis_url, broker_url = redis_server.url(0), redis_server.url(1)
        print(f"Started a private redis-server on port {redis_server.port}")

    fake = FakeBento(site_uuid="demo-site", publishable_key="demo-pub", secret_key="demo-secret").start()
    env = {
        "BENTO_SITE_UUID": fake.site_uuid,
        "BENTO_PUBLISHABLE_KEY": fake.publishable_key,
        "BENTO_SECRET_KEY": fake.secret_key,
        "BENTO_API_URL": fake.url,
        "BENTO_REDIS_URL": redis_url,
        "BENTO_REDIS_PREFIX": f"bento-demo-{run_id}",
        "BENTO_FLUSH_INTERVAL": "1",
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_DEFAULT_QUEUE": f"bento-demo-{run_id}",
    }
    os.environ.update(env)
    print(f"Fake Bento listening at {fake.url} (rate limit: the default 100 requests/minute)")

    from bento_tasks import send_event, track
    from bento_tasks.buffer import get_buffer
    from bento_tasks.celery import app

    app.conf.broker_url = broker_url
    app.conf.task_default_queue = env["CELERY_TASK_DEFAULT_QUEUE"]
    buffer = get_buffer()

    worker = CeleryWorker(env={**os.environ, **env}, cwd=ROOT, name=f"bento-demo-{run_id}").start()
    log_path = worker.log_path
    print(f"Worker with beat started (log: {log_path})")

    started = time.monotonic()
    try:
        half = args.events // 2
        for event in EXAMPLE_EVENTS:
            track(**event)
        for i in range(half):
            send_event.delay("$signup", f"delay-{i}@example.com", fields={"plan": "free", "n": i})
        for i in range(args.events - half):
            track(
                "$purchase",
                f"track-{i}@example.com",
                details={"unique": {"key": f"order-{i}"}, "value": {"currency": "USD", "amount": 1999}},
            )
        buffer.push(*BROKEN_ENTRIES)
        valid = len(EXAMPLE_EVENTS) + args.events
        print(
            f"Sent {valid} valid events ({half} via send_event.delay(), {args.events - half + 3} via track()) "
            f"and {len(BROKEN_ENTRIES)} broken entries"
        )

        deadline = started + args.timeout
        shown = None
        while time.monotonic() < deadline:
            status = buffer.status()
            progress = (status["queued"], status["in_flight"], len(fake.events), status["dead"])
            if progress != shown:
                shown = progress
                print(
                    f"  {time.monotonic() - started:5.1f}s  queued {progress[0]:>6}  in flight {progress[1]:>5}"
                    f"  delivered {progress[2]:>6}  dead {progress[3]}",
                    flush=True,
                )
            if progress[2] >= valid and progress[:2] == (0, 0):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        status = buffer.status()
        requests = [r for r in fake.requests if r.status == 200]
        delivered = len(fake.events)
        mean = delivered / len(requests) if requests else 0
        print(
            f"\nsent {valid + len(BROKEN_ENTRIES)}, delivered {delivered}, requests {len(fake.requests)}, "
            f"mean batch size {mean:.0f}, dead-lettered {status['dead']}, seconds {elapsed:.1f}"
        )
        if delivered < valid:
            print(f"FAILED: {valid - delivered} valid events were not delivered (worker log: {log_path})")
            return 1
        return 0
    finally:
        worker.stop()
        if redis_server:
            redis_server.stop()
        else:
            _forget(buffer, env["CELERY_TASK_DEFAULT_QUEUE"])
        fake.stop()


def _forget(buffer, queue: str) -> None:
    """Remove what this run created in a Redis it does not own, and nothing else."""
    keys = list(buffer.redis.scan_iter(match="{" + buffer.settings.redis_prefix + "}:*"))
    if keys:
        buffer.redis.delete(*keys)
    from bento_tasks.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.client.delete(queue)


if __name__ == "__main__":
    sys.exit(main())
