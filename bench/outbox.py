"""The outbox on PostgreSQL: ``python -m bench.outbox CALLS ROUNDS ROWS RELAY_ROUNDS`` prints one JSON object.

Run by ``bench.run`` (section ``outbox``) in a process of its own: once Django is configured in a
process, bento_tasks reads Django settings, which would change every later section.

1. write: ``send_event_on_commit`` with BENTO_OUTBOX inside a transaction that also INSERTs an order (the
   example shop's ``Order``), against the same transaction with the order alone; the after-commit relay
   thread runs as in production and its work is counted (it shares the process and the CPUs). A third
   side, the same with the relay thread held off, shows what the INSERT alone costs.
2. relay: rows per second one ``relay()`` moves to Redis from a backlog, against a floor of the same
   chunks moved with bare psycopg (``SELECT ... FOR UPDATE SKIP LOCKED`` and ``DELETE``) plus one
   ``RPUSH`` of each chunk.

Uses PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) in a database it creates and drops, and a
private ``redis-server``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis

from bento_tasks.testing import RedisServer

from .harness import ROOT, encoded_events

POSTGRES = "host=127.0.0.1 port=5432 user=postgres"
QUEUE_KEY = "{bento}:queue"
TABLE = "bento_tasks_outbox"
CHUNK = 1000  # bento_tasks.outbox.CHUNK


@contextmanager
def database() -> Iterator[str]:
    name = f"bento_bench_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(f"{POSTGRES} dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def configure(name: str, redis_url: str) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    sys.path.insert(0, str(ROOT / "examples" / "django_shop"))
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "bento_tasks", "shop"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "USER": "postgres",
                "NAME": name,
            }
        },
        USE_TZ=True,
        BENTO_SITE_UUID="bench-site",
        BENTO_PUBLISHABLE_KEY="bench-pub",
        BENTO_SECRET_KEY="bench-secret",
        BENTO_REDIS_URL=redis_url,
        BENTO_OUTBOX=True,
    )
    django.setup()
    call_command("migrate", verbosity=0)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- 1. the write ----------------------------------------------------------------------------------


def write(calls: int, rounds: int, queue: redis.Redis) -> dict[str, Any]:
    from django.db import transaction
    from shop.models import Order

    from bento_tasks import outbox, send_event_on_commit

    def order() -> Any:
        return Order.objects.create(email="jesse@example.com", sku="TEA-1", quantity=1, amount=1250, currency="USD")

    def alone() -> None:
        with transaction.atomic():
            order()

    def with_event() -> None:
        with transaction.atomic():
            placed = order()
            send_event_on_commit(
                "$purchase",
                placed.email,
                details={"unique": {"key": f"order-{placed.pk}"}, "value": {"currency": "USD", "amount": 1250}},
            )

    relay_thread = outbox._fast_path.add
    for fn in (alone, with_event):
        fn()  # connect, load the scripts, start the relay thread outside the timing
    outbox._fast_path.wait_idle(60)
    sides: dict[str, list[float]] = {"alone": [], "ours": [], "insert": []}
    tails, problems = [], []
    for _ in range(rounds):  # interleaved, so drift hits every side alike
        queue.delete(QUEUE_KEY)
        sides["alone"].append(timed(lambda: [alone() for _ in range(calls)]))
        sides["ours"].append(timed(lambda: [with_event() for _ in range(calls)]))
        started = time.perf_counter()
        outbox._fast_path.wait_idle(60)
        tails.append(time.perf_counter() - started)
        relayed = queue.llen(QUEUE_KEY)
        if relayed != calls:
            problems.append(f"after-commit relay moved {relayed} events of {calls}")
        outbox._fast_path.add = lambda alias, row_id: None  # the INSERT alone: rows wait for relay()
        sides["insert"].append(timed(lambda: [with_event() for _ in range(calls)]))
        outbox._fast_path.add = relay_thread
        outbox.relay()
    return {
        "per_call_us": {side: statistics.median(times) / calls * 1e6 for side, times in sides.items()},
        "ratios": [o / a for o, a in zip(sides["ours"], sides["alone"], strict=True)],
        "insert_ratios": [i / a for i, a in zip(sides["insert"], sides["alone"], strict=True)],
        "tail_ms": statistics.median(tails) * 1000,
        "problems": problems,
    }


# -- 2. the relay ----------------------------------------------------------------------------------


def fill(conn: psycopg.Connection, raws: list[bytes]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with conn.cursor() as cursor, cursor.copy(f"COPY {TABLE} (event, created) FROM STDIN") as copy:
        for raw in raws:
            copy.write_row((raw, now))
    conn.execute(f"VACUUM ANALYZE {TABLE}")  # each side starts from the same clean table


def bare_relay(conn: psycopg.Connection, queue: redis.Redis) -> None:
    """The floor: the same chunks and statements, no Django, no record of relayed rows."""
    while True:
        with conn.transaction():
            select = f"SELECT id, event FROM {TABLE} ORDER BY id LIMIT {CHUNK} FOR UPDATE SKIP LOCKED"
            rows = conn.execute(select).fetchall()
            if not rows:
                return
            queue.rpush(QUEUE_KEY, *(event for _, event in rows))
            conn.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", [[row_id for row_id, _ in rows]])


def relay(name: str, rows: int, rounds: int, queue: redis.Redis) -> dict[str, Any]:
    from bento_tasks import outbox

    raws = encoded_events(rows)
    rates: dict[str, list[float]] = {"ours": [], "floor": []}
    problems = []
    with psycopg.connect(f"{POSTGRES} dbname={name}", autocommit=True) as conn:
        for _ in range(rounds):  # interleaved
            for side, run in (("ours", outbox.relay), ("floor", lambda: bare_relay(conn, queue))):
                queue.delete(QUEUE_KEY)
                fill(conn, raws)
                rates[side].append(rows / timed(run))
                moved = queue.llen(QUEUE_KEY)
                left = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
                if moved != rows or left:
                    problems.append(f"{side}: {moved} events in Redis of {rows}, {left} rows left")
    return {
        "rates": {side: statistics.median(values) for side, values in rates.items()},
        "ours_rates": rates["ours"],
        "ratios": [o / f for o, f in zip(rates["ours"], rates["floor"], strict=True)],
        "problems": problems,
    }


def main(argv: list[str]) -> None:
    calls, rounds, rows, relay_rounds = (int(arg) for arg in argv)
    with RedisServer() as redis_server, database() as name:
        configure(name, redis_server.url(0))
        queue = redis.Redis.from_url(redis_server.url(0))
        result = {"write": write(calls, rounds, queue), "relay": relay(name, rows, relay_rounds, queue)}
        from django.db import connections

        connections.close_all()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
