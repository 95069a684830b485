"""bento_tasks inside a Django project: system checks, settings from Django, events sent after commit.

Needs Django configured, which must not leak into the rest of the suite (bento_tasks then reads
Django settings instead of the environment), so tests/test_django_suites.py runs this module in
its own pytest-django process with tests/django_settings.py; the main run skips it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings as django_settings

if not django_settings.configured:
    pytest.skip("needs Django: run by tests/test_django_suites.py under pytest-django", allow_module_level=True)

from celery import Celery, _state
from celery.schedules import crontab
from conftest import ROOT, wait_until
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction

import bento_tasks
from bento_tasks import InvalidEvent, conf, send_event_on_commit
from bento_tasks.buffer import get_buffer


@pytest.fixture(autouse=True)
def project_app():
    """The project's Celery app, as its celery.py makes it: configured from Django settings alone."""
    previous = _state.get_current_app()
    app = Celery("project")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    yield app
    previous.set_current()


@pytest.fixture
def queue(settings, redis_url):
    """The Redis buffer the Django settings point at; returns a function listing queued events."""
    settings.BENTO_REDIS_URL = redis_url
    buffer = get_buffer()
    return lambda: [json.loads(raw) for raw in buffer.redis.lrange(buffer.queue_key, 0, -1)]


def bento_checks() -> list:
    return run_checks(tags=["bento_tasks"])


def test_a_complete_project_passes_every_check():
    """Keys, defaults and the beat entry from the settings: `manage.py check` has nothing to say."""
    assert bento_checks() == []
    call_command("check")


def test_an_evicting_redis_is_a_check_error_naming_noeviction(settings, redis_url):
    """A buffer Redis whose maxmemory-policy may evict keys is an error (E004) with the exact fix; noeviction passes."""
    settings.BENTO_REDIS_URL = redis_url
    assert bento_checks() == []
    get_buffer().redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        [message] = bento_checks()
    finally:
        get_buffer().redis.config_set("maxmemory-policy", "noeviction")
    assert message.id == "bento_tasks.E004" and "allkeys-lru" in message.msg
    assert "CONFIG SET maxmemory-policy noeviction" in message.hint


def test_the_redis_memory_check_against_a_silent_redis_is_one_short_attempt(settings):
    """`manage.py check` against a Redis that takes the connection and never answers reports nothing (migrate and
    runserver work without Redis), after one connection attempt, tried once, that waits at most about a second and
    is closed afterwards: no pool is left behind."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    closed: list[bytes] = []

    def serve() -> None:
        listener.settimeout(15)
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(conn)
                threading.Thread(target=lambda c=conn: closed.append(drain(c)), daemon=True).start()

    def drain(conn: socket.socket) -> bytes:
        received = b""
        while chunk := conn.recv(4096):  # never answers; returns when the client closes its end
            received += chunk
        return received

    threading.Thread(target=serve, daemon=True).start()
    settings.BENTO_REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        started = time.monotonic()
        assert bento_checks() == []
        waited = time.monotonic() - started
        wait_until(lambda: closed, 5, message="the check's connection to be closed")
        assert len(accepted) == len(closed) == 1
        assert waited < 3, f"the check waited {waited:.1f} s for a silent Redis (its timeout is 1 s)"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_missing_keys_are_reported_with_the_line_to_add(settings):
    """A site uuid or secret key missing from Django settings is a `manage.py check` warning naming the setting
    and the line to add (a warning, so a developer without Bento keys can still migrate)."""
    del settings.BENTO_SITE_UUID
    del settings.BENTO_SECRET_KEY
    messages = bento_checks()
    assert [(m.id, m.msg.split()[0]) for m in messages] == [
        ("bento_tasks.W001", "BENTO_SITE_UUID"),
        ("bento_tasks.W001", "BENTO_SECRET_KEY"),
    ]
    assert 'Add BENTO_SITE_UUID = os.environ["BENTO_SITE_UUID"] to settings.py' in messages[0].hint
    assert "BENTO_SECRET_KEY is not set in your settings module (tests.django_settings)" in messages[1].msg
    with pytest.raises(SystemCheckError, match="BENTO_SECRET_KEY is not set"):
        call_command("check", fail_level="WARNING")


def test_an_empty_key_says_the_variable_is_not_exported(settings, monkeypatch):
    """A key present in Django settings but empty (os.environ.get("BENTO_SECRET_KEY", "") with the variable
    unset) is reported as a variable not exported in this shell, not as a line to add; with the variable
    exported but not read, the hint says to read it."""
    monkeypatch.delenv("BENTO_SECRET_KEY", raising=False)
    settings.BENTO_SECRET_KEY = ""
    [message] = bento_checks()
    assert message.id == "bento_tasks.W001"
    assert "BENTO_SECRET_KEY is empty in your settings module" in message.msg
    assert "not exported in the shell" in message.hint and "Add BENTO_SECRET_KEY" not in message.hint

    monkeypatch.setenv("BENTO_SECRET_KEY", "from-the-shell")
    [message] = bento_checks()
    assert "settings.py does not read it" in message.msg
    assert 'BENTO_SECRET_KEY = os.environ["BENTO_SECRET_KEY"]' in message.hint
    assert "from-the-shell" not in message.msg + message.hint


def test_test_modes_and_producers_need_no_keys(settings, redis_url):
    """Without any key, track() queues (a web process holds no secret), BENTO_DELIVERY="outbox" records events
    and `manage.py check` in outbox mode has no W001 to report."""
    for name in conf.KEYS:
        delattr(settings, name)
    settings.BENTO_REDIS_URL = redis_url
    bento_tasks.track("signup", "jesse@example.com")
    assert get_buffer().status()["queued"] == 1
    settings.BENTO_DELIVERY = "outbox"
    bento_tasks.track("signup", "walter@example.com")
    assert bento_checks() == []


def test_a_bento_dict_is_accepted(settings):
    """A BENTO = {...} dict holds the same settings without the prefix."""
    for name in ("BENTO_SITE_UUID", "BENTO_PUBLISHABLE_KEY", "BENTO_SECRET_KEY", "BENTO_FLUSH_INTERVAL"):
        delattr(settings, name)
    settings.BENTO = {"SITE_UUID": "dict-site", "PUBLISHABLE_KEY": "p", "SECRET_KEY": "s", "BATCH_SIZE": 250}
    assert bento_checks() == []
    assert (conf.get_settings().site_uuid, conf.get_settings().batch_size) == ("dict-site", 250)


def test_batch_size_over_1000_is_reported(settings):
    """A batch size above Bento's 1000 per request is an error whose hint gives the value to set."""
    settings.BENTO_BATCH_SIZE = 5000
    [message] = bento_checks()
    assert message.id == "bento_tasks.E001"
    assert "BENTO_BATCH_SIZE = 1000" in message.hint


@pytest.mark.parametrize(
    ("url", "ids"),
    [
        ("http://app.bentonow.com/api/v1", ["bento_tasks.E002"]),
        ("ftp://app.bentonow.com/api/v1", ["bento_tasks.E002"]),
        ("http://127.0.0.1:8025/api/v1", []),
        ("https://app.bentonow.com/api/v1", []),
    ],
)
def test_api_url_must_be_https_except_loopback(settings, url, ids):
    """A non-https API URL is an error (hint: the https default); http to a loopback fake is allowed."""
    settings.BENTO_API_URL = url
    messages = bento_checks()
    assert [m.id for m in messages] == ids
    assert all('BENTO_API_URL = "https://app.bentonow.com/api/v1"' in m.hint for m in messages)


def test_any_other_invalid_setting_is_reported_by_name(settings):
    """A setting the resolver refuses (here a non-numeric timeout) is reported with its name."""
    settings.BENTO_TIMEOUT = "soon"
    [message] = bento_checks()
    assert (message.id, "BENTO_TIMEOUT" in message.msg) == ("bento_tasks.E003", True)


def test_every_refused_value_is_its_own_message_with_type_and_example(settings):
    """All refused values are reported together, one check message each, saying what is expected and giving
    an example in settings.py syntax; typos and an API URL that is not an API base are warnings."""
    settings.BENTO_BATCH_SIZE = 5000
    settings.BENTO_FLUSH_INTERVAL = "5s"
    settings.BENTO_MASK_EMAILS = "nope"
    settings.BENTO_MAX_RETRIES = 2.7
    settings.BENTO_RATE_LIMT = 50
    settings.BENTO = {"TIMEOUTS": 3}
    settings.BENTO_API_URL = "https://app.bentonow.com"
    messages = {(m.id, m.msg.split()[0]): m for m in bento_checks()}
    assert set(messages) == {
        ("bento_tasks.E001", "BENTO_BATCH_SIZE"),
        ("bento_tasks.E003", "BENTO_FLUSH_INTERVAL"),
        ("bento_tasks.E003", "BENTO_MASK_EMAILS"),
        ("bento_tasks.E003", "BENTO_MAX_RETRIES"),
        ("bento_tasks.W005", "BENTO_RATE_LIMT"),
        ("bento_tasks.W005", 'BENTO["TIMEOUTS"]'),
        ("bento_tasks.W006", "BENTO_API_URL"),
    }
    assert "expected a number of seconds" in messages["bento_tasks.E003", "BENTO_FLUSH_INTERVAL"].msg
    assert "BENTO_FLUSH_INTERVAL = 5" in messages["bento_tasks.E003", "BENTO_FLUSH_INTERVAL"].hint
    assert "BENTO_MASK_EMAILS = True" in messages["bento_tasks.E003", "BENTO_MASK_EMAILS"].hint
    assert "whole number" in messages["bento_tasks.E003", "BENTO_MAX_RETRIES"].msg
    assert "Did you mean BENTO_RATE_LIMIT?" == messages["bento_tasks.W005", "BENTO_RATE_LIMT"].hint
    assert 'Did you mean BENTO["TIMEOUT"]?' == messages["bento_tasks.W005", 'BENTO["TIMEOUTS"]'].hint
    assert "/api/v1" in messages["bento_tasks.W006", "BENTO_API_URL"].msg
    with pytest.raises(conf.ConfigurationError) as raised:
        conf.get_settings()
    assert len(raised.value.problems) == 4


def test_an_environment_variable_django_settings_do_not_read_is_reported(settings, monkeypatch):
    """Under Django, an exported BENTO_* variable that settings.py does not read (missing, or set to another
    value) is a W004 warning naming it and where the value must go; one that settings.py reads is not."""
    monkeypatch.setenv("BENTO_API_URL", "http://127.0.0.1:8765/api/v1")
    [message] = bento_checks()
    assert message.id == "bento_tasks.W004"
    assert "BENTO_API_URL is set, but bento_tasks reads Django settings (tests.django_settings)" in message.msg
    assert "'https://app.bentonow.com/api/v1' is used" in message.msg
    assert 'BENTO_API_URL = os.environ["BENTO_API_URL"]' in message.hint

    monkeypatch.setenv("BENTO_TIMEOUT", "10")
    settings.BENTO_TIMEOUT = 30
    assert [m.msg.split()[3] for m in bento_checks()] == ["BENTO_API_URL", "BENTO_TIMEOUT"]
    assert "differs from BENTO_TIMEOUT in Django settings" in bento_checks()[1].msg

    settings.BENTO_API_URL = "http://127.0.0.1:8765/api/v1"  # as os.environ["BENTO_API_URL"] would give it
    settings.BENTO_TIMEOUT = 10.0
    assert bento_checks() == []


def test_w002_says_to_import_the_app_when_celery_py_already_adds_the_schedule(settings, tmp_path, monkeypatch):
    """With celery.py calling add_flush_schedule(app) but the project's __init__.py not importing the app, W002
    says to add that import to __init__.py, not to call add_flush_schedule again."""
    project = tmp_path / "tutorialproj"
    project.mkdir()
    (project / "__init__.py").write_text("")
    (project / "settings.py").write_text("")
    (project / "celery.py").write_text("import bento_tasks\n\napp = None\nbento_tasks.add_flush_schedule(app)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("tutorialproj.settings")
    settings.CELERY_BEAT_SCHEDULE = {}
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tutorialproj.settings")
    [message] = bento_checks()
    assert message.id == "bento_tasks.W002"
    assert "tutorialproj/celery.py calls bento_tasks.add_flush_schedule(app)" in message.hint
    assert '"from .celery import app as celery_app" to tutorialproj/__init__.py' in message.hint
    assert "or call bento_tasks.add_flush_schedule" not in message.hint

    (project / "celery.py").write_text("app = None\n")
    [message] = bento_checks()
    assert "Call bento_tasks.add_flush_schedule(app) in tutorialproj/celery.py" in message.hint


def test_beat_schedule_without_the_flush_is_reported_with_the_entry_to_add(settings):
    """No beat entry for flush_events: a warning whose hint is the exact entry (and the helper to call)."""
    settings.CELERY_BEAT_SCHEDULE = {"other": {"task": "shop.tasks.cleanup", "schedule": 60}}
    [message] = bento_checks()
    assert message.id == "bento_tasks.W002"
    assert '"bento-flush": {"task": "bento_tasks.flush_events", "schedule": 5}' in message.hint
    assert "bento_tasks.add_flush_schedule(app)" in message.hint


@pytest.mark.parametrize("schedule", [60.0, crontab()])
def test_a_flush_slower_than_its_interval_cannot_keep_up_with_the_rate_limit(settings, schedule):
    """Beat flushing once a minute with BENTO_FLUSH_INTERVAL=5 uses a fraction of the rate limit: warned,
    with both fixes; matching BENTO_FLUSH_INTERVAL to the schedule clears it."""
    settings.CELERY_BEAT_SCHEDULE = {"bento-flush": {"task": "bento_tasks.flush_events", "schedule": schedule}}
    [message] = bento_checks()
    assert message.id == "bento_tasks.W003"
    assert "18 a minute, below BENTO_RATE_LIMIT (100 a minute)" in message.msg
    assert '"schedule": 5' in message.hint and "BENTO_FLUSH_INTERVAL = 60" in message.hint
    settings.BENTO_FLUSH_INTERVAL = 60
    assert bento_checks() == []


def test_add_flush_schedule_satisfies_the_checks(settings, project_app):
    """With the schedule added by add_flush_schedule() instead of the setting, the beat checks pass and the
    entry runs every BENTO_FLUSH_INTERVAL from the Django settings."""
    settings.CELERY_BEAT_SCHEDULE = {}
    settings.BENTO_FLUSH_INTERVAL = 2.5
    bento_tasks.add_flush_schedule(project_app)
    assert bento_checks() == []
    assert project_app.conf.beat_schedule["bento-flush"] == {"task": "bento_tasks.flush_events", "schedule": 2.5}


def test_project_app_finds_the_tasks(project_app):
    """autodiscover_tasks() on the project's app registers the three shared tasks via INSTALLED_APPS."""
    project_app.loader.import_default_modules()
    assert {"bento_tasks.send_event", "bento_tasks.flush_events", "bento_tasks.post_batch"} <= set(project_app.tasks)


def test_changed_django_settings_take_effect_at_once(settings):
    """override_settings / pytest-django's settings fixture reset the resolved settings (setting_changed)."""
    assert conf.get_settings().batch_size == 1000
    settings.BENTO_BATCH_SIZE = 10
    assert conf.get_settings().batch_size == 10


@pytest.mark.django_db(transaction=True)
def test_an_event_is_queued_when_its_transaction_commits(queue):
    """send_event_on_commit() queues nothing inside the transaction and the event (dated at the call) after commit."""
    from django.contrib.auth.models import User

    with transaction.atomic():
        User.objects.create(username="jesse", email="jesse@example.com")
        send_event_on_commit("$subscribe", "jesse@example.com", fields={"first_name": "Jesse"})
        bento_tasks.purchase("jesse@example.com", "order-1", 8000, "USD", on_commit=True)
        assert queue() == []
    events = queue()
    assert [(e["type"], e["email"]) for e in events] == [
        ("$subscribe", "jesse@example.com"),
        ("$purchase", "jesse@example.com"),
    ]
    assert events[1]["details"]["unique"] == {"key": "order-1"}
    assert all(e["date"] for e in events)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_sends_nothing(queue):
    """A rolled-back transaction, or savepoint, discards its events; the committed outer one still sends."""
    from django.contrib.auth.models import User

    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create(username="walter", email="walter@example.com")
        send_event_on_commit("$subscribe", "walter@example.com")
        raise RuntimeError("payment declined")
    assert queue() == [] and not User.objects.filter(username="walter").exists()

    with transaction.atomic():
        send_event_on_commit("outer", "jesse@example.com")
        with pytest.raises(RuntimeError), transaction.atomic():
            send_event_on_commit("inner", "jesse@example.com")
            raise RuntimeError("inner step failed")
    assert [e["type"] for e in queue()] == ["outer"]


@pytest.mark.django_db(transaction=True)
def test_an_invalid_event_raises_at_the_call_not_at_commit(queue):
    """send_event_on_commit() validates at once, so the caller sees InvalidEvent inside its transaction."""
    with pytest.raises(InvalidEvent, match="email"), transaction.atomic():
        send_event_on_commit("$subscribe", "not-an-email")
    assert queue() == []


def test_status_cli_reads_the_django_settings_module(queue, redis_url, tmp_path):
    """`python -m bento_tasks status --json` with only DJANGO_SETTINGS_MODULE set counts the project's queue."""
    bento_tasks.track("signup", "jesse@example.com")
    bento_tasks.track("signup", "walter@example.com")
    (tmp_path / "cli_settings.py").write_text(
        f'BENTO_SITE_UUID = "site"\nBENTO_PUBLISHABLE_KEY = "pub"\nBENTO_SECRET_KEY = "secret"\n'
        f"BENTO_REDIS_URL = {redis_url!r}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": "cli_settings"}
    out = subprocess.run(
        [sys.executable, "-m", "bento_tasks", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["queued"] == 2
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    assert status["redis"] == {"host": "127.0.0.1", "port": port, "db": 0}
    assert status["settings"] == "Django settings (cli_settings)"
    assert status["outbox"] is None  # BENTO_OUTBOX is off
