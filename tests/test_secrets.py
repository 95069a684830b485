"""The secret key and subscribers' addresses stay out of logs, broker messages, status and dead letters."""

from __future__ import annotations

import base64
import json
import re

import pytest
from conftest import run_cli, wait_until

from bento_tasks import tasks, track
from bento_tasks.conf import get_settings

pytestmark = pytest.mark.slow


def broker_messages(celery_app) -> list[dict]:
    client = celery_app.connection_for_write().default_channel.client
    return [json.loads(raw) for raw in client.lrange("celery", 0, -1)]


def test_broker_messages_carry_batch_ids_not_events_or_secrets(buffer, celery_app):
    """post_batch messages hold only a batch id: no event, address or key travels through the broker."""
    for i in range(2000):
        track("signup", f"person{i}@example.com")
    tasks.flush_events.run()
    messages = broker_messages(celery_app)
    assert len(messages) == 2
    for message in messages:
        assert message["headers"]["task"] == "bento_tasks.post_batch"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert len(args) == 1 and re.fullmatch(r"[0-9a-f]{32}", args[0]) and kwargs == {}
    assert get_settings().secret_key not in json.dumps(messages)
    assert "@example.com" not in json.dumps(messages)


def test_secret_key_never_logged_and_emails_masked(bento_env, buffer, fake, start_worker):
    """Through retries, a 429, a 401 pause and dead letters, the worker log never shows the secret
    key, and bento_tasks' own log lines never show a full address."""
    secret = bento_env["BENTO_SECRET_KEY"]
    for i in range(2500):
        track("signup", f"person{i}@example.com")
    buffer.push(b'{"type":"t","email":"leaky@example.com","fields":{"a":[1]}}')
    fake.fail(503, times=2)
    fake.fail(429, retry_after="1")
    fake.secret_key = "rotated-elsewhere"  # our key is now wrong: 401, pause, loud log
    worker = start_worker(BENTO_CONFIG_ERROR_PAUSE="2")
    wait_until(lambda: fake.count_status(401) >= 1, 30, message="a 401")
    fake.secret_key = secret
    fake.wait_for_events(2500, timeout=60)
    wait_until(lambda: "dead-lettered" in worker.output(), 10, message="the dead-letter log line")

    log = worker.output()
    assert "BENTO_SECRET_KEY" in log  # the 401 hint was logged ...
    assert secret not in log  # ... without the key itself
    own_lines = [line for line in log.splitlines() if "bento_tasks:" in line]
    assert own_lines and not [line for line in own_lines if re.search(r"[\w.+-]{2,}@example\.com", line)]

    status = run_cli(bento_env, "status", "--json")
    dead = run_cli(bento_env, "dead", "list", "--json")
    assert secret not in status.stdout + status.stderr + dead.stdout + dead.stderr
    assert json.loads(dead.stdout)["dead_letters"]
    assert all(secret.encode() not in raw for raw in buffer.redis.lrange(buffer.dead_key, 0, -1))
