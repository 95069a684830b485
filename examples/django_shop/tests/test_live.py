"""End to end: Django view, Redis, a live Celery worker with beat, the fake Bento; settings from Django alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import PROJECT
from shop.models import Order
from shop.views import DECLINED_CARD

# on_commit callbacks run only when a transaction really commits.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_checkout_reaches_bento_through_the_worker(client, live_shop, bento_fake):
    """A paid checkout's $purchase reaches Bento through Redis and the project's own worker; a declined one
    never does; `manage.py check` and the status CLI read the same Django settings."""
    order = {"email": "jesse@example.com", "sku": "TEA-1", "quantity": 1}
    assert client.post("/checkout", {**order, "card": DECLINED_CARD}).status_code == 402
    assert client.post("/checkout", {**order, "card": "4242424242424242"}).status_code == 201

    [event] = bento_fake.wait_for_events(1, timeout=30)
    assert event["details"]["unique"] == {"key": f"order-{Order.objects.get().pk}"}
    assert event["details"]["value"] == {"currency": "USD", "amount": 1250}

    deadline = time.monotonic() + 15
    while (status := json.loads(run(live_shop, "-m", "bento_tasks", "status", "--json")))["in_flight"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert (status["queued"], status["dead"], status["delivered"]) == (0, 0, 1)
    assert len(bento_fake.events) == 1  # the declined order's purchase was never queued
    assert "System check identified no issues" in run(live_shop, "manage.py", "check")
