"""End to end: a live ``celery -A bento_tasks worker -B``, the private Redis and the fake Bento."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT, run_cli, wait_until

from bento_tasks import send_event, track
from bento_tasks.testing import EXAMPLE_EVENTS

pytestmark = pytest.mark.slow


def settled(buffer) -> bool:
    status = buffer.status()
    return status["queued"] == 0 and status["in_flight"] == 0


def test_events_from_both_paths_arrive_exactly_once(bento_env, buffer, fake, celery_app, start_worker):
    """Seed examples plus thousands of events via send_event.delay() and track() reach Bento once each,
    in batches of at most 1000 with the right auth, site and headers; invalid entries are dead-lettered."""
    start_worker()
    for event in EXAMPLE_EVENTS:
        track(**event)
    for i in range(2000):
        send_event.delay("signup", f"delay{i}@example.com", fields={"n": i})
    for i in range(3000):
        track("$purchase", f"track{i}@example.com", details={"unique": {"key": f"order-{i}"}})
    invalid = [
        b"{broken",
        b'{"type":"t","email":"no-at-sign"}',
        b'{"type":"t","email":"a@example.com","fields":{"a":[1]}}',
    ]
    buffer.push(*invalid)

    total = len(EXAMPLE_EVENTS) + 2000 + 3000
    fake.wait_for_events(total, timeout=120)
    wait_until(lambda: settled(buffer), 30, message="the buffer to drain")

    emails = Counter(event["email"] for event in fake.events)
    assert len(fake.events) == total
    assert all(count == 1 for email, count in emails.items() if email != "test@bentonow.com")
    assert emails["test@bentonow.com"] == 3
    accepted = [r for r in fake.requests if r.status == 200]
    assert all(1 <= len(r.events) <= 1000 for r in accepted)
    expected_auth = "Basic " + base64.b64encode(f"{fake.publishable_key}:{fake.secret_key}".encode()).decode()
    for request in accepted:
        assert request.headers["authorization"] == expected_auth
        assert request.query == {"site_uuid": fake.site_uuid}
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("bento-tasks/")
    assert all("date" in event for event in fake.events)

    dead = buffer.dead_letters()
    assert sorted(letter.event for letter in dead) == sorted(invalid)
    assert all(letter.reason for letter in dead)
    status = json.loads(run_cli(bento_env, "status", "--json").stdout)
    assert (status["queued"], status["in_flight"], status["dead"], status["delivered"]) == (0, 0, 3, total)


def test_transient_failures_and_429_still_deliver_everything(bento_env, buffer, fake, start_worker):
    """5xx, a timeout-length delay and 429 with Retry-After from the fake: every event still arrives once."""
    fake.fail(503, times=2)
    fake.fail(429, times=1, retry_after="1")
    fake.fail(502, times=1)
    for i in range(3500):
        track("signup", f"user{i}@example.com")
    start_worker()
    fake.wait_for_events(3500, timeout=60)
    wait_until(lambda: settled(buffer), 30, message="the buffer to drain")
    assert len({event["email"] for event in fake.events}) == 3500 == len(fake.events)
    assert fake.count_status(429) == 1 and fake.count_status(503) == 2


PRODUCER = """
import sys

import bento_tasks
import bento_tasks.celery  # the standalone app, whose broker is CELERY_BROKER_URL

for i in range(20):
    bento_tasks.track("signup", f"track{i}@example.com")
bento_tasks.tag("tagged@example.com", "beta")
if sys.argv[1:] == ["delay"]:
    bento_tasks.send_event.delay("signup", "delayed@example.com")
"""


def test_a_producer_without_keys_queues_what_a_worker_with_keys_delivers(bento_env, broker_url, fake, start_worker):
    """Least privilege: a producer whose environment holds only BENTO_REDIS_URL (plus the broker URL for
    .delay()) queues events with track(), a helper and send_event.delay(); a worker holding the keys delivers
    them to the fake Bento."""
    start_worker()
    base = {"PATH": os.environ["PATH"], "BENTO_REDIS_URL": bento_env["BENTO_REDIS_URL"]}
    for env, args in ((base, []), ({**base, "CELERY_BROKER_URL": broker_url}, ["delay"])):
        done = subprocess.run(
            [sys.executable, "-c", PRODUCER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    fake.wait_for_events(2 * 21 + 1, timeout=60)
    emails = Counter(event["email"] for event in fake.events)
    assert (emails["track0@example.com"], emails["tagged@example.com"], emails["delayed@example.com"]) == (2, 2, 1)
