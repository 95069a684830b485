"""Redis faults: a private redis-server with AOF killed and restarted under live workers."""

from __future__ import annotations

import signal
import threading
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
    # Killing Redis between Bento's 200 and the ACK would re-send that batch (a lost answer, which the
    # README allows): this test is about events surviving, so the kill waits for the last ACK.
    wait_until(lambda: get_buffer().status()["in_flight"] == 0, 30, message="the last ACK")

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


def test_row_6_a_full_buffer_redis_refuses_events_loudly_and_delivery_resumes_by_itself(
    monkeypatch, bento_env, tmp_path, fake, start_worker
):
    """Row 6: the buffer's Redis at maxmemory (noeviction), the broker on another Redis as the README advises:
    track() raises BufferUnavailable, nothing queued is lost, and the same worker process resumes delivery once
    memory is freed, without a restart; every event arrives once."""
    for key, value in {"BENTO_TIMEOUT": "2", "BENTO_CONNECT_TIMEOUT": "1", "BENTO_LEASE_MARGIN": "3"}.items():
        monkeypatch.setenv(key, value)
    buffer_redis = RedisServer(str(tmp_path)).start()
    monkeypatch.setenv("BENTO_REDIS_URL", buffer_redis.url(0))
    conf.reset_settings()
    try:
        for i in range(2000):
            track("signup", f"before{i}@example.com")
        admin = get_buffer().redis
        admin.config_set("maxmemory", 1)  # full: every write is refused from now on
        worker = start_worker()
        with pytest.raises(BufferUnavailable, match="maxmemory"):
            track("signup", "during@example.com")
        time.sleep(4)  # flushes and posts meet the full Redis meanwhile
        assert fake.events == [] and get_buffer().status()["queued"] == 2000
        admin.config_set("maxmemory", 0)
        fake.wait_for_events(2000, timeout=60)
        wait_until(lambda: get_buffer().status()["in_flight"] == 0, 30, message="the last ACK")
        assert worker.process.poll() is None  # the same worker, never restarted
        emails = [event["email"] for event in fake.events]
        assert len(emails) == len(set(emails)) == 2000
    finally:
        buffer_redis.stop()


def test_an_outcome_redis_could_not_take_is_recorded_once_it_is_back(
    monkeypatch, bento_env, aof_redis, fake, start_worker
):
    """Redis restarts between Bento's 200 and the ACK: the worker retries the ACK within its lease, so the batch is
    not re-sent (no duplicate, no death counted)."""
    monkeypatch.setenv("BENTO_REDIS_URL", aof_redis.url(0))
    conf.reset_settings()
    for i in range(500):
        track("signup", f"user{i}@example.com")

    def restart_redis(request) -> None:
        fake.on_request(None)
        aof_redis.stop(signal.SIGKILL)
        threading.Timer(1.5, aof_redis.start).start()

    fake.on_request(restart_redis)
    worker = start_worker()
    fake.wait_for_events(500, timeout=30)
    wait_until(lambda: _settled(), 30, message="the ACK")
    assert "could not record the outcome in Redis" in worker.output()
    assert len(fake.events) == 500 and len(fake.requests) == 1
    assert get_buffer().status()["worker_deaths"] == 0


def _settled() -> bool:
    try:
        status = get_buffer().status()
    except BufferUnavailable:  # still restarting (status() names the Redis instead of raising redis-py's error)
        return False
    return status["in_flight"] == 0 and status["delivered"] == 500


def test_a_worker_warns_at_start_when_redis_may_evict_events(bento_env, buffer, start_worker):
    """A worker whose buffer Redis has an evicting maxmemory-policy logs a warning naming noeviction."""
    buffer.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        worker = start_worker(beat=False)
        wait_until(lambda: "maxmemory-policy allkeys-lru" in worker.output(), 10, message="the warning")
        [line] = [line for line in worker.output().splitlines() if "maxmemory-policy allkeys-lru" in line]
        assert "WARNING" in line and "noeviction" in line
    finally:
        buffer.redis.config_set("maxmemory-policy", "noeviction")
