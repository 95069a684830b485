"""Celery 5.7's Redis-restart crash (docs/celery-5.7-redis-restart.md) and bento_tasks.compat's fix.

Each scenario is the real thing: one redis-server with AOF as broker and buffer, a real worker whose
``post_batch`` is waiting on a slow fake Bento (its message delivered, not yet acknowledged), Redis
SIGKILLed and restarted under it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.worker.consumer.consumer import Consumer
from conftest import BROKER_DB, ROOT, free_port, needs_redis_binary, wait_until
from kombu import Connection

from bento_tasks import compat, conf, track
from bento_tasks.buffer import get_buffer
from bento_tasks.testing import CeleryWorker, FakeBento, RedisServer

pytestmark = [pytest.mark.slow, needs_redis_binary]

AFFECTED = compat.needs_reconnect_fix(compat.celery_version())
FIX_ACTIVE = "reconnect fix active"
FIX_OFF = "BENTO_CELERY_RECONNECT_FIX is off"
CRASH = "Unrecoverable error: AttributeError"
SHOP = ROOT / "examples" / "django_shop"
# Celery 5.4 loses the ack of a message delivered before the restart (measured with kombu 5.6.2): the broker
# redelivers it after visibility_timeout, and post_batch then finds its batch delivered and does nothing.
ACK_SURVIVES_A_RESTART = compat.celery_version() >= (5, 6)

StartWorker = Callable[..., CeleryWorker]


@pytest.fixture
def aof_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bento_env: dict[str, str]) -> Iterator[RedisServer]:
    """One redis-server with AOF as both buffer (db 0, also for this process) and broker (db 1)."""
    (tmp_path / "aof").mkdir()
    server = RedisServer(str(tmp_path / "aof"), appendonly=True).start()
    monkeypatch.setenv("BENTO_REDIS_URL", server.url(0))
    conf.reset_settings()
    yield server
    server.stop()


def restart_redis_under_an_unacked_post(server: RedisServer, fake: FakeBento) -> None:
    """Queue 3 events, wait until a worker's post_batch is inside a slow POST, then SIGKILL and restart Redis."""
    fake.delay = 3.0  # the POST (and so the unacknowledged post_batch message) outlives the Redis restart
    for i in range(3):
        track("signup", f"before{i}@example.com")
    wait_until(lambda: fake.requests, 30, message="a post_batch to be in flight")
    server.stop(signal.SIGKILL)
    time.sleep(1)
    server.start()
    fake.delay = 0.0


def assert_worker_survived(worker: CeleryWorker, server: RedisServer, fake: FakeBento) -> None:
    """The in-flight batch is delivered and acknowledged, and the worker goes on delivering."""

    def alive_and(predicate: Callable[[], bool]) -> Callable[[], bool]:
        def probe() -> bool:
            assert worker.process is not None and worker.process.poll() is None, f"worker exited:\n{worker.output()}"
            return predicate()

        return probe

    buffer = get_buffer()
    broker = redis.Redis.from_url(server.url(BROKER_DB))
    wait_until(alive_and(lambda: buffer.status()["delivered"] == 3), 30, message="the in-flight batch's ACK")
    if ACK_SURVIVES_A_RESTART:
        wait_until(alive_and(lambda: broker.hlen("unacked") == 0), 30, message="the post_batch message's ack")
    for i in range(2):
        track("signup", f"after{i}@example.com")
    wait_until(alive_and(lambda: len(fake.events) >= 5), 30, message="events tracked after the restart")
    emails = [event["email"] for event in fake.events]
    assert len(emails) == len(set(emails)) == 5, emails
    assert CRASH not in worker.output()


class StaleChannel:
    """Stands in for kombu's Redis channel in the bug's two steps: its first close is cut short by the pending BRPOP
    read (Redis is gone), and a second close restores the unacked messages through a client built from its
    transport's ``client`` (``Channel._connparams``), which ``collect()`` set to None."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        if self.closes == 1:
            raise redis.exceptions.ConnectionError("Error while reading from socket: connection closed")
        self.transport.client.hostname  # noqa: B018  # what _connparams reads first

    def __bool__(self) -> bool:
        return True


def lose_the_broker(connection: Connection) -> None:
    """Run this Celery's own ``Consumer.on_connection_error_after_connected`` for ``connection``, as the consumer does
    when the broker drops (the consumer's other state as a worker with nothing running has it)."""
    conf = SimpleNamespace(
        worker_cancel_long_running_tasks_on_connection_loss=True, worker_enable_prefetch_count_reduction=False
    )
    consumer = SimpleNamespace(connection=connection, app=SimpleNamespace(conf=conf))
    Consumer.on_connection_error_after_connected(consumer, redis.exceptions.ConnectionError("lost"))  # type: ignore[arg-type]


def connection_with_a_stale_channel() -> tuple[Connection, StaleChannel]:
    connection = Connection(f"redis://127.0.0.1:{free_port()}/0")  # never dialled
    channel = StaleChannel(connection.transport)
    connection._default_channel = channel  # type: ignore[attr-defined]
    return connection, channel


def test_the_fix_is_gated_to_exactly_the_celery_releases_that_crash() -> None:
    """With this Celery's consumer and this kombu's Connection, the cleanup after a lost broker crashes on a channel
    whose close was cut short (AttributeError 'hostname', Celery 5.7.0) exactly when compat gates the fix on:
    a later Celery that still crashes, or a 5.7 release that no longer does, fails here."""
    connection, channel = connection_with_a_stale_channel()
    try:
        lose_the_broker(connection)
    except AttributeError as exc:
        assert "hostname" in str(exc)
        crashes = True
    else:
        crashes = False
    assert crashes == AFFECTED, (
        f"celery {compat.celery_version()}: crashes={crashes}, compat.AFFECTED={compat.AFFECTED}"
    )
    assert channel.closes == (2 if crashes else 1)


def test_the_fix_forgets_the_stale_channel_of_that_one_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fix the same cleanup does not crash and closes the stale channel once; kombu's Connection class is
    untouched and the connection keeps no override; applying it twice wraps once."""
    monkeypatch.setattr(Consumer, "on_connection_error_after_connected", Consumer.on_connection_error_after_connected)
    collect = Connection.collect
    assert compat.apply_reconnect_fix() is True and compat.apply_reconnect_fix() is False
    connection, channel = connection_with_a_stale_channel()
    lose_the_broker(connection)
    assert channel.closes == 1
    assert Connection.collect is collect and "collect" not in vars(connection)


def test_standalone_worker_survives_a_redis_restart_with_a_message_unacked(
    aof_redis: RedisServer, fake: FakeBento, start_worker: StartWorker
) -> None:
    """`celery -A bento_tasks worker` keeps running through a Redis restart with post_batch unacknowledged,
    finishes that batch and delivers later events; on Celery 5.7 it logs once, at INFO, that the fix is active."""
    worker = start_worker(CELERY_BROKER_URL=aof_redis.url(BROKER_DB))
    restart_redis_under_an_unacked_post(aof_redis, fake)
    assert_worker_survived(worker, aof_redis, fake)
    assert worker.output().count(FIX_ACTIVE) == (1 if AFFECTED else 0), worker.output()
    if AFFECTED:
        assert f"INFO/MainProcess] bento_tasks: Celery {compat.celery_version()[0]}." in worker.output()


@pytest.mark.skipif(not AFFECTED, reason=f"celery {'.'.join(map(str, compat.celery_version()))} has no such bug")
def test_without_the_fix_celery_5_7_worker_dies_on_a_redis_restart(
    aof_redis: RedisServer, fake: FakeBento, start_worker: StartWorker
) -> None:
    """With BENTO_CELERY_RECONNECT_FIX=false the same restart stops a Celery 5.7 worker ("Unrecoverable error:
    AttributeError ... 'hostname'"). When this fails, Celery has fixed the bug: narrow compat.AFFECTED."""
    worker = start_worker(CELERY_BROKER_URL=aof_redis.url(BROKER_DB), BENTO_CELERY_RECONNECT_FIX="false")
    assert FIX_OFF in worker.output() and FIX_ACTIVE not in worker.output()
    restart_redis_under_an_unacked_post(aof_redis, fake)
    assert worker.process is not None
    try:
        worker.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker survived without the fix: has Celery fixed the bug?\n{worker.output()}")
    assert CRASH in worker.output() and "'hostname'" in worker.output(), worker.output()


@pytest.fixture
def shop_worker(
    aof_redis: RedisServer, fake: FakeBento, bento_env: dict[str, str], tmp_path: Path
) -> Iterator[CeleryWorker]:
    """The example project's own `celery -A shop worker -B`: bento_tasks arrives through INSTALLED_APPS and
    autodiscover_tasks(), every setting through a Django settings module."""
    values: dict[str, Any] = {
        "BENTO_SITE_UUID": fake.site_uuid,
        "BENTO_PUBLISHABLE_KEY": fake.publishable_key,
        "BENTO_SECRET_KEY": fake.secret_key,
        "BENTO_API_URL": fake.url,
        "BENTO_REDIS_URL": aof_redis.url(0),
        "BENTO_FLUSH_INTERVAL": 0.5,
        "BENTO_RATE_LIMIT": 0,
        "CELERY_BROKER_URL": aof_redis.url(BROKER_DB),
    }
    lines = ["from shop.settings import *  # noqa: F403"] + [f"{name} = {value!r}" for name, value in values.items()]
    (tmp_path / "shop_reconnect_settings.py").write_text("\n".join(lines) + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SHOP)]),
        "DJANGO_SETTINGS_MODULE": "shop_reconnect_settings",
    }
    with CeleryWorker(app="shop", env=env, cwd=SHOP, directory=tmp_path, name="shop") as worker:
        yield worker


def test_django_project_worker_survives_a_redis_restart(
    shop_worker: CeleryWorker, aof_redis: RedisServer, fake: FakeBento
) -> None:
    """A Django project's `celery -A shop worker` gets the same fix (logged once on Celery 5.7) and survives the
    same Redis restart."""
    assert shop_worker.output().count(FIX_ACTIVE) == (1 if AFFECTED else 0), shop_worker.output()
    restart_redis_under_an_unacked_post(aof_redis, fake)
    assert_worker_survived(shop_worker, aof_redis, fake)


def test_importing_bento_tasks_outside_a_worker_leaves_celery_alone() -> None:
    """Producers, beat and the CLI import bento_tasks without the fix (nor Celery's consumer): only a worker's start
    applies it."""
    code = (
        "import sys, bento_tasks; print('celery.worker.consumer.consumer' in sys.modules); "
        "from celery.worker.consumer.consumer import Consumer; "
        "print(getattr(Consumer.on_connection_error_after_connected, 'bento_reconnect_fix', False))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]
