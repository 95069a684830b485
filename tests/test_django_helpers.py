"""Event helpers, the BENTO_DELIVERY test modes, the pytest fixtures and the beat helper, without Django.

tests/test_django_app.py covers what needs Django configured (checks, on_commit, settings).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from celery import Celery
from conftest import ROOT

import bento_tasks
from bento_tasks import BentoError, ConfigurationError, InvalidEvent, conf, send_event, track
from bento_tasks.pytest_plugin import override_bento_settings

EMAIL = "jesse@example.com"


def without_dates(events: list[dict]) -> list[dict]:
    assert all("date" in event for event in events)
    return [{key: value for key, value in event.items() if key != "date"} for event in events]


def test_purchase_is_the_purchase_bento_documents(bento_outbox):
    """purchase() builds the seed's $purchase event exactly: unique key, value in cents, cart, fields."""
    cart = {
        "items": [{"product_sku": "SKU123", "product_name": "Test", "quantity": 100}],
        "abandoned_checkout_url": "https://test.com",
    }
    bento_tasks.purchase(EMAIL, "test123", 8000, "USD", cart=cart, fields={"first_name": "Jesse"})
    assert without_dates(bento_outbox) == [
        {
            "type": "$purchase",
            "email": EMAIL,
            "fields": {"first_name": "Jesse"},
            "details": {"unique": {"key": "test123"}, "value": {"currency": "USD", "amount": 8000}, "cart": cart},
        }
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 19.99}, "details.value.amount"),
        ({"amount": "8000"}, "details.value.amount"),
        ({"currency": "usd"}, "details.value.currency"),
        ({"unique_key": ""}, "details.unique.key"),
        ({"unique_key": None}, "details.unique.key"),
        ({"cart": {"item": []}}, "details.cart.item"),
        ({"fields": {"plan": {"nested": 1}}}, "fields.plan"),
    ],
)
def test_purchase_refuses_what_bento_would_miscount(bento_outbox, change, field):
    """A purchase Bento could not count once, in cents, is refused before queueing, naming the field."""
    call = {"email": EMAIL, "unique_key": 42, "amount": 8000, "currency": "USD", **change}
    with pytest.raises(InvalidEvent) as refused:
        bento_tasks.purchase(**call)
    assert field in refused.value.errors
    assert bento_outbox == []


def test_each_helper_builds_its_documented_event(bento_outbox):
    """subscribe, unsubscribe, tag, remove_tag and update_fields build the events Bento's SDKs send."""
    bento_tasks.subscribe(EMAIL, fields={"first_name": "Jesse"})
    bento_tasks.unsubscribe(EMAIL)
    bento_tasks.tag(EMAIL, "customer")
    bento_tasks.remove_tag(EMAIL, "lead")
    bento_tasks.update_fields(EMAIL, {"plan": "pro"})
    assert without_dates(bento_outbox) == [
        {"type": "$subscribe", "email": EMAIL, "fields": {"first_name": "Jesse"}},
        {"type": "$unsubscribe", "email": EMAIL},
        {"type": "$tag", "email": EMAIL, "details": {"tag": "customer"}},
        {"type": "$remove_tag", "email": EMAIL, "details": {"tag": "lead"}},
        {"type": "$update_fields", "email": EMAIL, "fields": {"plan": "pro"}},
    ]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: bento_tasks.tag(EMAIL, ""), "details.tag"),
        (lambda: bento_tasks.remove_tag(EMAIL, None), "details.tag"),
        (lambda: bento_tasks.update_fields(EMAIL, {}), "fields"),
        (lambda: bento_tasks.subscribe("not-an-email"), "email"),
    ],
)
def test_helpers_refuse_incomplete_events(bento_outbox, call, field):
    """An empty tag, an empty field update or a bad email raises InvalidEvent naming the field."""
    with pytest.raises(InvalidEvent) as refused:
        call()
    assert field in refused.value.errors
    assert bento_outbox == []


def test_outbox_mode_needs_no_redis_and_no_broker(bento_outbox, monkeypatch):
    """In outbox mode track(), send_event.delay() and helpers record events without touching Redis or a broker."""
    monkeypatch.setenv("BENTO_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    conf.reset_settings()
    track("signup", EMAIL, fields={"n": 1})
    assert send_event.delay("signup", EMAIL, fields={"n": 2}) is None
    bento_tasks.tag(EMAIL, "beta")
    assert [(event["type"], event.get("fields")) for event in bento_outbox] == [
        ("signup", {"n": 1}),
        ("signup", {"n": 2}),
        ("$tag", None),
    ]


def test_sync_mode_posts_each_event_before_returning(bento_sync):
    """With bento_sync, track() and send_event.delay() have POSTed the event to the fake when they return."""
    track("signup", EMAIL)
    send_event.delay("$purchase", EMAIL, details={"unique": {"key": "o-1"}})
    assert [event["type"] for event in bento_sync.events] == ["signup", "$purchase"]
    assert len(bento_sync.requests) == 2


def test_sync_mode_raises_when_bento_refuses(bento_sync):
    """A refused POST in sync mode raises BentoError in the test instead of passing silently."""
    bento_sync.fail(503, times=1)
    with pytest.raises(BentoError, match="503"):
        track("signup", EMAIL)


def test_unknown_delivery_mode_is_refused(bento_env, monkeypatch):
    """BENTO_DELIVERY accepts only redis, sync or outbox, and the error says so."""
    monkeypatch.setenv("BENTO_DELIVERY", "fast")
    conf.reset_settings()
    with pytest.raises(ConfigurationError, match="BENTO_DELIVERY is 'fast': expected one of redis, sync, outbox"):
        conf.get_settings()


def test_fixture_overrides_are_undone(bento_env):
    """override_bento_settings (behind bento_fake and bento_outbox) restores the settings it changed."""
    before = conf.get_settings()
    with override_bento_settings(BENTO_BATCH_SIZE=7, BENTO_DELIVERY="outbox"):
        assert (conf.get_settings().batch_size, conf.get_settings().delivery) == (7, "outbox")
    assert (conf.get_settings().batch_size, conf.get_settings().delivery) == (before.batch_size, "redis")


def test_add_flush_schedule_reads_the_interval_when_the_app_is_configured(bento_env, monkeypatch):
    """add_flush_schedule() takes BENTO_FLUSH_INTERVAL at configure time, not at the call, and keeps an entry
    the project already named bento-flush."""
    app = Celery("project", set_as_current=False)
    bento_tasks.add_flush_schedule(app)
    monkeypatch.setenv("BENTO_FLUSH_INTERVAL", "7")
    conf.reset_settings()
    assert app.conf.beat_schedule == {"bento-flush": {"task": "bento_tasks.flush_events", "schedule": 7.0}}

    own = {"bento-flush": {"task": "bento_tasks.flush_events", "schedule": 2.0}}
    configured = Celery("project", set_as_current=False)
    configured.config_from_object({"beat_schedule": own})
    assert configured.conf.beat_schedule == own  # configured before the call: added at once
    bento_tasks.add_flush_schedule(configured)
    assert configured.conf.beat_schedule == own


def test_add_flush_schedule_adds_the_outbox_relay_when_the_outbox_is_on(bento_env, monkeypatch):
    """With BENTO_OUTBOX on, add_flush_schedule() also runs bento_tasks.relay_outbox every BENTO_FLUSH_INTERVAL."""
    monkeypatch.setenv("BENTO_OUTBOX", "1")
    app = Celery("project", set_as_current=False)
    bento_tasks.add_flush_schedule(app)
    assert app.conf.beat_schedule == {
        "bento-flush": {"task": "bento_tasks.flush_events", "schedule": 0.5},
        "bento-relay": {"task": "bento_tasks.relay_outbox", "schedule": 0.5},
    }


def test_relay_outbox_with_the_outbox_off_does_nothing(bento_env):
    """The relay task, run where BENTO_OUTBOX is off (here without Django configured), touches no database."""
    assert bento_tasks.relay_outbox() == {"rows": 0, "pushed": 0}


def test_relay_outbox_without_django_names_the_setting(bento_env, monkeypatch):
    """BENTO_OUTBOX on in a worker without Django settings: a ConfigurationError that says what to do."""
    monkeypatch.setenv("BENTO_OUTBOX", "1")
    conf.reset_settings()
    with pytest.raises(ConfigurationError, match="BENTO_OUTBOX is on but Django is not configured"):
        bento_tasks.relay_outbox()


def test_package_imports_without_django_and_creates_no_celery_app():
    """`import bento_tasks` works where Django is not installed and creates no Celery app."""
    code = (
        "import sys; sys.modules['django'] = None\n"  # makes every `import django...` fail
        "import bento_tasks, bento_tasks.pytest_plugin\n"
        "from bento_tasks import relay_outbox\n"
        "from celery import _state\n"
        "assert _state.default_app is None and getattr(_state._tls, 'current_app', None) is None\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
