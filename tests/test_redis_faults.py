"""Redis faults: a private redis-server with AOF killed and restarted under live workers."""

from __future__ import annotations

import signal
import time

import pytest
from celery import Celery
from conftest import needs_redis_binary, wait_until

from bento_tasks import BufferUnavailable, conf, send_event, track
from bento_tasks.buffer import get_buffer
from bento_tasks.testing import RedisServer

pytestmark = [pytest.mark.slow, needs_redis_binary]


@pytest.fixture
def aof_redis(tmp_path):
    server = RedisServer(str(tmp_path / "aof"), appendonly=True)
    (tmp_path / "aof").mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def on_aof_redis(monkeypatch, bento_env, aof_redis, celery_app):
    """Buffer and broker both on the AOF server, as in a one-Redis deployment."""
    monkeypatch.setenv("BENTO_REDIS_URL", aof_redis.url(0))
    conf.reset_settings()
    # A Celery app caches its producer pool, so this broker gets an app of its own.
    app = Celery("aof", broker=aof_redis.url(1), set_as_current=True)
    yield aof_redis
    app.close()
    celery_app.set_current()


def test_accepted_events_survive_a_redis_crash_and_workers_reconnect(on_aof_redis, fake, start_worker):
    """Events accepted by track() and send_event.delay() survive SIGKILL of Redis (AOF); a worker started
    before a second crash reconnects by itself and delivers what comes after it."""
    for i in range(1000):
        track("signup", f"track{i}@example.com")
    for i in range(200):
        send_event.delay("signup", f"delay{i}@example.com")
    on_aof_redis.stop(signal.SIGKILL)
    on_aof_redis.start()
    conf.reset_settings()  # a fresh client: nothing cached from before the crash
    assert get_buffer().status()["queued"] == 1000

    start_worker(CELERY_BROKER_URL=on_aof_redis.url(1))
    fake.wait_for_events(1200, timeout=60)

    on_aof_redis.stop(signal.SIGKILL)
    time.sleep(1)
    on_aof_redis.start()  # scripts are gone (NOSCRIPT): they are reloaded on first use
    for i in range(500):
        wait_until(lambda i=i: _tracked(f"after{i}@example.com"), 10, message="Redis to accept writes")
    fake.wait_for_events(1700, timeout=60)
    emails = [event["email"] for event in fake.events]
    assert len(set(emails)) == 1700


def _tracked(email: str) -> bool:
    try:
        track("signup", email)
        return True
    except BufferUnavailable:
        return False


def test_send_event_retries_while_the_buffer_redis_is_down(
    monkeypatch, bento_env, tmp_path, fake, celery_app, start_worker
):
    """With the buffer's Redis down, track() raises BufferUnavailable and send_event keeps retrying
    until Redis is back; the event then arrives."""
    buffer_redis = RedisServer(str(tmp_path), appendonly=True).start()
    monkeypatch.setenv("BENTO_REDIS_URL", buffer_redis.url(0))
    conf.reset_settings()
    buffer_redis.stop()
    try:
        with pytest.raises(BufferUnavailable):
            track("signup", "now@example.com")
        worker = start_worker()
        send_event.delay("signup", "later@example.com")
        wait_until(lambda: "BufferUnavailable" in worker.output(), 20, message="send_event to meet the outage")
        time.sleep(2)
        buffer_redis.start()
        [event] = fake.wait_for_events(1, timeout=60)
        assert event["email"] == "later@example.com"
        assert "Retry in" in worker.output()
    finally:
        buffer_redis.stop()
