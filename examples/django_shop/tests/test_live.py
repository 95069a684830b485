"""End to end: Django view, the outbox, Redis, a live Celery worker with beat, the fake Bento; settings from
Django alone."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from conftest import PROJECT
from shop.models import Order
from shop.views import DECLINED_CARD

from bento_tasks import outbox
from bento_tasks.models import OutboxEvent

# on_commit callbacks run only when a transaction really commits.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def status(env: dict[str, str]) -> dict:
    return json.loads(run(env, "-m", "bento_tasks", "status", "--json"))


def settled(env: dict[str, str]) -> dict:
    """The status once nothing is queued, in flight or waiting in the outbox."""
    deadline = time.monotonic() + 30
    while (now := status(env))["in_flight"] or now["queued"] or now["outbox"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    return now


def test_a_checkout_reaches_bento_through_the_worker(client, live_shop, bento_fake):
    """A paid checkout's $purchase goes through the outbox, Redis and the project's own worker to Bento; a
    declined one never does; `manage.py check` and the status CLI read the same Django settings."""
    order = {"email": "jesse@example.com", "sku": "TEA-1", "quantity": 1}
    assert client.post("/checkout", {**order, "card": DECLINED_CARD}).status_code == 402
    assert client.post("/checkout", {**order, "card": "4242424242424242"}).status_code == 201

    [event] = bento_fake.wait_for_events(1, timeout=30)
    assert event["details"]["unique"] == {"key": f"order-{Order.objects.get().pk}"}
    assert event["details"]["value"] == {"currency": "USD", "amount": 1250}

    now = settled(live_shop)
    assert (now["queued"], now["dead"], now["delivered"], now["outbox"]) == (0, 0, 1, 0)
    assert len(bento_fake.events) == 1  # the declined order's purchase was never queued
    assert "System check identified no issues" in run(live_shop, "manage.py", "check")


def test_checkouts_while_redis_is_down_all_succeed_and_reach_bento_once_it_is_back(
    client, live_shop, redis_server, bento_fake, caplog
):
    """With the private Redis (buffer and broker) stopped, 500 checkouts all answer 201 and leave 500 rows in
    the outbox, with one warning; once Redis is back the worker's beat relays them and Bento gets each
    purchase exactly once."""
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="bento_tasks"):
            codes = [
                client.post(
                    "/checkout", {"email": f"buyer{n}@example.com", "sku": "TEA-1", "card": "4242424242424242"}
                ).status_code
                for n in range(500)
            ]
            assert outbox._fast_path.wait_idle(30)  # every row tried, none relayed
        assert codes == [201] * 500
        assert OutboxEvent.objects.count() == 500
        assert len([r for r in caplog.records if r.name == "bento_tasks.outbox"]) == 1
    finally:
        redis_server.start()
    events = bento_fake.wait_for_events(500, timeout=90)
    now = settled(live_shop)
    keys = sorted(event["details"]["unique"]["key"] for event in bento_fake.events)
    assert keys == sorted(f"order-{pk}" for pk in Order.objects.values_list("pk", flat=True))
    assert len(events) == len(bento_fake.events) == 500 and (now["delivered"], now["dead"]) == (500, 0)
