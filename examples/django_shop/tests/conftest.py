"""Fixtures for the shop's tests.

From bento-tasks' pytest plugin: ``bento_outbox`` (events kept in memory), ``bento_fake`` (a real
HTTP fake of Bento) and ``bento_sync`` (each event POSTed to that fake at once). From pytest-django:
``client``, ``settings`` and ``django_capture_on_commit_callbacks``. Here: a private Redis and a live
Celery worker for the end-to-end test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bento_tasks.testing import FakeBento, RedisServer

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port: never the Redis on 6379."""
    if shutil.which("redis-server") is None and os.environ.get("BENTO_TESTS_REQUIRE_REDIS") != "1":
        pytest.skip("needs redis-server on PATH")
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def live_shop(settings, redis_server, bento_fake: FakeBento, tmp_path) -> Iterator[dict[str, str]]:
    """The shop wired to a real pipeline (Redis buffer and broker, the fake Bento) in this process and in a
    live `celery -A shop worker -B`, which gets these settings from a Django settings module alone.

    Returns the environment of that worker, for running other commands (the status CLI) the same way.
    """
    redis.Redis.from_url(redis_server.url()).flushall()
    values = {
        "BENTO_SITE_UUID": bento_fake.site_uuid,
        "BENTO_PUBLISHABLE_KEY": bento_fake.publishable_key,
        "BENTO_SECRET_KEY": bento_fake.secret_key,
        "BENTO_API_URL": bento_fake.url,
        "BENTO_REDIS_URL": redis_server.url(0),
        "BENTO_FLUSH_INTERVAL": 0.5,
        "CELERY_BROKER_URL": redis_server.url(1),
    }
    for name, value in values.items():
        setattr(settings, name, value)
    lines = ["from shop.settings import *  # noqa: F403"] + [f"{name} = {value!r}" for name, value in values.items()]
    (tmp_path / "shop_live_settings.py").write_text("\n".join(lines) + "\n")
    # No BENTO_* or CELERY_* variables: the worker must find everything in the settings module.
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT)]),
        "DJANGO_SETTINGS_MODULE": "shop_live_settings",
    }
    log_path = tmp_path / "worker.log"
    args = ["-A", "shop", "worker", "-B", "-l", "info", "--concurrency", "1", "--without-mingle", "--without-gossip"]
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", *args, "-s", str(tmp_path / "celerybeat-schedule")],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its pool and beat too
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log_path.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield env
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
