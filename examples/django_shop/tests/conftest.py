"""Fixtures for the shop's tests.

From bento-tasks' pytest plugin: ``bento_outbox`` (events kept in memory), ``bento_fake`` (a real
HTTP fake of Bento) and ``bento_sync`` (each event POSTed to that fake at once). From pytest-django:
``client``, ``settings`` and ``django_capture_on_commit_callbacks``. Here: a private Redis and a live
Celery worker for the end-to-end tests, on the test database (PostgreSQL, see shop/settings_test.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from bento_tasks.testing import CeleryWorker, FakeBento, RedisServer

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port: never the Redis on 6379."""
    if shutil.which("redis-server") is None and os.environ.get("BENTO_TESTS_REQUIRE_REDIS") != "1":
        pytest.skip("needs redis-server on PATH")
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def live_shop(settings, transactional_db, redis_server, bento_fake: FakeBento, tmp_path) -> Iterator[dict[str, str]]:
    """The shop wired to a real pipeline (Redis buffer and broker, the fake Bento, the test database with its
    outbox table) in this process and in a live `celery -A shop worker -B`, which gets these settings from a
    Django settings module alone.

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
    database = {key: connection.settings_dict[key] for key in ("ENGINE", "NAME", "HOST", "PORT", "USER")}
    lines = ["from shop.settings import *  # noqa: F403", f"DATABASES = {{'default': {database!r}}}"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    (tmp_path / "shop_live_settings.py").write_text("\n".join(lines) + "\n")
    # No BENTO_* or CELERY_* variables: the worker must find everything in the settings module.
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT)]),
        "DJANGO_SETTINGS_MODULE": "shop_live_settings",
    }
    with CeleryWorker(app="shop", env=env, cwd=PROJECT, directory=tmp_path, concurrency=1):
        yield env
