"""Fixtures: a private Redis, the fake Bento, settings pointing at both, and live Celery workers.

Tests never touch the Redis on 6379. Each session starts its own ``redis-server`` on a free
port (fakeredis's TCP server only where no binary exists, and never when
BENTO_TESTS_REQUIRE_REDIS=1, as CI sets), and only that server is ever flushed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bento_tasks import conf, track
from bento_tasks.testing import CeleryWorker, FakeBento, RedisServer

ROOT = Path(__file__).resolve().parent.parent
BUFFER_DB, BROKER_DB = 0, 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def configure(monkeypatch, **values: str) -> None:
    """Set BENTO_* environment settings for this test (undone at its end) and resolve them afresh."""
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    conf.reset_settings()


def queue_events(n: int, start: int = 0) -> None:
    """track() ``n`` signups, user{start}@example.com onwards, each with its number in ``fields.n``."""
    for i in range(start, start + n):
        track("signup", f"user{i}@example.com", fields={"n": i})


class FakeRedisTcp:
    """fakeredis's TCP server, for machines without a redis-server binary."""

    def __init__(self) -> None:
        from fakeredis import TcpFakeServer

        self.port = free_port()
        self.server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, db: int = BUFFER_DB) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> FakeRedisTcp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def has_redis_binary() -> bool:
    return shutil.which("redis-server") is not None


needs_redis_binary = pytest.mark.skipif(
    not has_redis_binary() and os.environ.get("BENTO_TESTS_REQUIRE_REDIS") != "1",
    reason="needs a real redis-server process to stop and restart",
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer | FakeRedisTcp]:
    if has_redis_binary():
        server: RedisServer | FakeRedisTcp = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    elif os.environ.get("BENTO_TESTS_REQUIRE_REDIS") == "1":
        pytest.exit("BENTO_TESTS_REQUIRE_REDIS=1 but no redis-server binary is on PATH", returncode=3)
    else:
        server = FakeRedisTcp().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The buffer's Redis URL, on a server this session started, emptied for each test."""
    redis.Redis.from_url(redis_server.url()).flushall()
    return redis_server.url(BUFFER_DB)


@pytest.fixture
def broker_url(redis_server, redis_url) -> str:
    return redis_server.url(BROKER_DB)


@pytest.fixture
def fake() -> Iterator[FakeBento]:
    with FakeBento(site_uuid="site-123", publishable_key="pub-abc", secret_key="sekrit-xyz-do-not-log") as server:
        yield server


@pytest.fixture
def bento_env(monkeypatch, redis_url, fake) -> dict[str, str]:
    """Point bento_tasks at the private Redis and the fake Bento, through the environment."""
    env = {
        "BENTO_SITE_UUID": fake.site_uuid,
        "BENTO_PUBLISHABLE_KEY": fake.publishable_key,
        "BENTO_SECRET_KEY": fake.secret_key,
        "BENTO_API_URL": fake.url,
        "BENTO_REDIS_URL": redis_url,
        "BENTO_RATE_LIMIT": "0",
        "BENTO_FLUSH_INTERVAL": "0.5",
        "BENTO_RETRY_BACKOFF": "0.2",
        "BENTO_RETRY_BACKOFF_MAX": "1",
        "BENTO_TIMEOUT": "5",
        "BENTO_CONNECT_TIMEOUT": "2",
    }
    for key in [k for k in os.environ if k.startswith("BENTO_") and k != "BENTO_TESTS_REQUIRE_REDIS"]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    conf.reset_settings()
    yield env
    conf.reset_settings()


@pytest.fixture
def buffer(bento_env):
    from bento_tasks.buffer import get_buffer

    return get_buffer()


@pytest.fixture
def celery_app(broker_url):
    """The standalone app, pointed at the private broker, as the current app of this process."""
    from bento_tasks.celery import app

    app.conf.broker_url = broker_url
    app.set_current()
    app.set_default()
    return app


@pytest.fixture
def start_worker(bento_env, broker_url, tmp_path):
    """Start live ``celery -A bento_tasks worker -B`` processes with this test's settings; all stop at teardown."""
    workers: list[CeleryWorker] = []

    def start(name: str = "w1", beat: bool = True, concurrency: int = 2, **overrides: str) -> CeleryWorker:
        # os.environ already holds this test's BENTO_* settings (bento_env and any later setenv)
        env = {**os.environ, "CELERY_BROKER_URL": broker_url, **overrides}
        worker = CeleryWorker(
            env=env, cwd=ROOT, directory=tmp_path, name=f"{name}-{len(workers)}", beat=beat, concurrency=concurrency
        )
        workers.append(worker)
        return worker.start().wait_ready()

    yield start
    for worker in workers:
        worker.stop()


class Dispatches:
    """Stands in for ``post_batch`` inside the tasks module; records what would be sent.

    ``pending`` and ``sent`` hold ``(batch_id, countdown)``; ``run_next`` runs the oldest pending
    message at once, whatever its countdown.
    """

    def __init__(self, task) -> None:
        self.task = task
        self.pending: list[tuple[str, float]] = []
        self.sent: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def delay(self, batch_id: str) -> None:
        self.apply_async((batch_id,))

    def apply_async(self, args, kwargs=None, countdown: float = 0) -> None:
        call = (args[0], countdown)
        with self.lock:
            self.pending.append(call)
            self.sent.append(call)

    def run_next(self) -> str:
        batch_id, _ = self.pending.pop(0)
        return self.task.run(batch_id)

    def run_all(self, limit: int = 1000) -> list[str]:
        results = []
        while self.pending and limit:
            results.append(self.run_next())
            limit -= 1
        return results


@pytest.fixture
def dispatches(monkeypatch, bento_env):
    """Run the tasks in this process: post_batch dispatches are recorded, then run on demand."""
    from bento_tasks import tasks

    recorder = Dispatches(tasks.post_batch)
    monkeypatch.setattr(tasks, "post_batch", recorder)
    return recorder


def run_cli(env: dict[str, str], *args: str, module: bool = True) -> subprocess.CompletedProcess:
    """``python -m bento_tasks ARGS`` (or the installed console script) as a real subprocess."""
    script = Path(sys.executable).parent / "bento-tasks"
    command = [sys.executable, "-m", "bento_tasks", *args] if module else [str(script), *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def claim_events(buffer, full_only: bool = False) -> tuple[str, list[bytes]] | None:
    """Claim a batch and read back its events, as the post task will."""
    claimed = buffer.claim(full_only=full_only)
    if claimed is None:
        return None
    return claimed[0], buffer.redis.lrange(buffer.batch_key(claimed[0]), 0, -1)
