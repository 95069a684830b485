"""The transactional outbox (BENTO_OUTBOX) on a real database: PostgreSQL, MariaDB/MySQL and SQLite.

Run by tests/test_django_suites.py under pytest-django, once with each of tests/django_outbox_pg.py,
tests/django_outbox_mysql.py and tests/django_outbox_sqlite.py; the main run skips this module.
Relays that must be killed or run side by side are real subprocesses (tests/outbox_relay.py) on the
same test databases and the same private Redis; events then go through flush_events and post_batch
(in this process) to the fake Bento.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

if not django_settings.configured:
    pytest.skip("needs Django: run by tests/test_django_suites.py under pytest-django", allow_module_level=True)

from conftest import ROOT, Dispatches, free_port, wait_until
from django.core.checks import run_checks
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

import bento_tasks
from bento_tasks import BentoError, InvalidEvent, OutboxMisuse, outbox, send_event_on_commit, tasks
from bento_tasks.buffer import get_buffer
from bento_tasks.events import build_event, encode_event
from bento_tasks.models import OutboxEvent
from bento_tasks.testing import FakeBento

EMAIL = "jesse@example.com"
RELAY_SCRIPT = Path(__file__).with_name("outbox_relay.py")
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SELECT ... FOR UPDATE SKIP LOCKED and table locks: PostgreSQL"
)
# Each test commits for real (on-commit callbacks, other connections, subprocesses); pytest-django
# empties the tables afterwards.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Pipeline:
    """The private Redis and the fake Bento behind this test's Django settings."""

    def __init__(self, fake: FakeBento, dispatches: Dispatches) -> None:
        self.fake = fake
        self.dispatches = dispatches

    @property
    def buffer(self):
        return get_buffer()

    def queued(self) -> list[dict]:
        return [json.loads(raw) for raw in self.buffer.redis.lrange(self.buffer.queue_key, 0, -1)]

    def queued_raw(self) -> list[bytes]:
        return self.buffer.redis.lrange(self.buffer.queue_key, 0, -1)

    def deliver(self) -> list[dict]:
        """Flush and post everything queued, in this process; return what the fake Bento accepted."""
        while self.buffer.status()["queued"]:
            tasks.flush_events()
            self.dispatches.run_all()
        return self.fake.events

    def records(self, alias: str = "default") -> int:
        """Rows the relay still remembers (pushed, delete not known to have committed)."""
        return sum(self.buffer.redis.scard(key) for key in self.buffer.redis.keys(f"{{bento}}:outbox:{alias}:*"))


@pytest.fixture
def pipeline(settings, redis_url, fake, monkeypatch) -> Iterator[Pipeline]:
    settings.BENTO_REDIS_URL = redis_url
    settings.BENTO_API_URL = fake.url
    settings.BENTO_SITE_UUID, settings.BENTO_PUBLISHABLE_KEY = fake.site_uuid, fake.publishable_key
    settings.BENTO_SECRET_KEY = fake.secret_key
    settings.BENTO_RATE_LIMIT = 0
    recorder = Dispatches(tasks.post_batch)
    monkeypatch.setattr(tasks, "post_batch", recorder)
    yield Pipeline(fake, recorder)
    # The after-commit thread must be done with this test's rows before the next test's Redis and tables.
    assert outbox._fast_path.wait_idle(10)


def waiting(alias: str = "default") -> int:
    return OutboxEvent.objects.using(alias).count()


def relayed_by_fast_path(pipeline: Pipeline, count: int, alias: str = "default") -> list[dict]:
    """Wait for the after-commit thread to move ``count`` events to Redis and empty the table."""
    wait_until(lambda: len(pipeline.queued()) >= count and waiting(alias) == 0, timeout=10, message="the fast path")
    return pipeline.queued()


def encoded(n: int, **event) -> bytes:
    return encode_event(build_event(event.pop("type", "signup"), f"user{n}@example.com", **event), 64 * 1024)


def fill(count: int, alias: str = "default") -> list[bytes]:
    raws = [encoded(n) for n in range(count)]
    OutboxEvent.objects.using(alias).bulk_create([OutboxEvent(event=raw) for raw in raws], batch_size=2000)
    return raws


def exactly_once(events: list[dict], count: int) -> None:
    emails = sorted(int(event["email"][4 : event["email"].index("@")]) for event in events)
    assert emails == list(range(count)), f"{len(emails)} events, {len(set(emails))} distinct, expected {count}"


# -- writing rows in the caller's transaction ------------------------------------------------------


def test_a_committed_event_is_a_row_until_commit_then_relayed_to_redis(pipeline):
    """Inside the transaction the event is a row and Redis holds nothing; after commit the fast path pushes
    the exact bytes to the queue and deletes the row."""
    with transaction.atomic():
        send_event_on_commit("$subscribe", EMAIL, fields={"first_name": "Jesse"})
        [row] = OutboxEvent.objects.all()
        assert pipeline.queued() == []
    [event] = relayed_by_fast_path(pipeline, 1)
    assert pipeline.queued_raw() == [bytes(row.event)]
    assert (event["type"], event["email"], event["fields"]) == ("$subscribe", EMAIL, {"first_name": "Jesse"})
    assert pipeline.records() == 0  # forgotten once the delete committed


def test_a_rolled_back_transaction_leaves_no_row_and_sends_nothing(pipeline):
    """An exception in the transaction rolls back the order's event with it: no row, nothing in Redis."""
    from django.contrib.auth.models import User

    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create(username="walter", email="walter@example.com")
        bento_tasks.purchase("walter@example.com", "order-1", 8000, "USD", on_commit=True)
        raise RuntimeError("card declined")
    send_event_on_commit("after", EMAIL)  # a later event still goes: the rolled-back one never does
    assert [e["type"] for e in relayed_by_fast_path(pipeline, 1)] == ["after"]
    assert not User.objects.exists()


def test_nested_atomic_blocks_keep_the_events_of_committed_savepoints_only(pipeline):
    """A rolled-back savepoint drops its events, a released one keeps them; all go at the outer commit, in order."""
    with transaction.atomic():
        send_event_on_commit("outer-1", EMAIL)
        with pytest.raises(RuntimeError), transaction.atomic():
            send_event_on_commit("inner-rolled-back", EMAIL)
            raise RuntimeError("inner step failed")
        with transaction.atomic():
            send_event_on_commit("inner-kept", EMAIL)
            with transaction.atomic(savepoint=False):
                send_event_on_commit("innermost", EMAIL)
        send_event_on_commit("outer-2", EMAIL)
        assert waiting() == 4 and pipeline.queued() == []
    events = relayed_by_fast_path(pipeline, 4)
    assert [e["type"] for e in events] == ["outer-1", "inner-kept", "innermost", "outer-2"]


def test_outside_a_transaction_the_row_is_committed_on_its_own(pipeline):
    """In autocommit the row commits at once and is relayed at once."""
    send_event_on_commit("signup", EMAIL)
    assert [e["type"] for e in relayed_by_fast_path(pipeline, 1)] == ["signup"]


def test_an_invalid_event_raises_in_the_caller_and_writes_nothing(pipeline):
    """InvalidEvent (naming the field) is raised at the call, inside the transaction; no row is written."""
    with pytest.raises(InvalidEvent, match=r"details\.value\.amount"), transaction.atomic():
        bento_tasks.purchase(EMAIL, "order-1", 19.99, "USD", on_commit=True)
    assert waiting() == 0


def test_two_database_aliases_each_write_in_their_own_transaction_and_relay_apart(pipeline):
    """using= puts the row in that alias's transaction; the same row id on two aliases is two events, not one
    (the relay's records are kept per alias), even when the events are byte for byte the same."""
    date = "2026-01-01T12:00:00+00:00"
    with transaction.atomic(using="other"):
        send_event_on_commit("signup", EMAIL, date=date, using="other")
        assert waiting("other") == 1 and waiting("default") == 0
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        send_event_on_commit("rolled-back", EMAIL, using="other")
        raise RuntimeError
    with transaction.atomic():
        send_event_on_commit("signup", EMAIL, date=date)
    wait_until(lambda: len(pipeline.queued()) == 2 and waiting("other") + waiting() == 0, timeout=10, message="both")
    raws = pipeline.queued_raw()
    assert raws[0] == raws[1]
    assert [e["type"] for e in pipeline.deliver()] == ["signup", "signup"]


def test_helpers_with_on_commit_write_on_the_alias_they_are_given(pipeline):
    """Every helper's using= puts its row in that alias's transaction (rolled back with it); using= without
    on_commit=True is refused, since an event sent at once joins no transaction."""
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        bento_tasks.purchase(EMAIL, "order-1", 100, "USD", on_commit=True, using="other")
        bento_tasks.tag(EMAIL, "vip", on_commit=True, using="other")
        assert waiting("other") == 2 and waiting("default") == 0
        raise RuntimeError
    assert waiting("other") == 0
    with transaction.atomic(using="other"):
        bento_tasks.subscribe(EMAIL, on_commit=True, using="other")
        bento_tasks.update_fields(EMAIL, {"plan": "pro"}, on_commit=True, using="other")
        bento_tasks.remove_tag(EMAIL, "trial", on_commit=True, using="other")
        bento_tasks.unsubscribe(EMAIL, on_commit=True, using="other")
        assert waiting("other") == 4 and waiting("default") == 0
    with pytest.raises(TypeError, match="on_commit=True"):
        bento_tasks.unsubscribe(EMAIL, using="other")
    wait_until(lambda: len(pipeline.queued()) == 4 and waiting("other") == 0, timeout=10, message="all relayed")
    assert sorted(e["type"] for e in pipeline.deliver()) == [
        "$remove_tag",
        "$subscribe",
        "$unsubscribe",
        "$update_fields",
    ]


# -- Redis out of the request path -----------------------------------------------------------------


def test_with_redis_down_commits_succeed_rows_wait_and_one_warning_is_logged(pipeline, settings, redis_url, caplog):
    """Redis unreachable: every commit succeeds, the events wait as rows and the fast path warns once; the
    safety net relays them when Redis is back, each once, with the date of the call however late."""
    settings.BENTO_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="bento_tasks"):
        for n in range(20):
            with transaction.atomic():
                send_event_on_commit("signup", f"user{n}@example.com")
        stamped = [json.loads(row.event)["date"] for row in OutboxEvent.objects.order_by("pk")]
        assert outbox._fast_path.wait_idle(10)  # every row was tried, and left in the table
    warnings = [r for r in caplog.records if r.name == "bento_tasks.outbox"]
    assert len(warnings) == 1 and "relay_outbox" in warnings[0].getMessage()
    assert waiting() == 20

    settings.BENTO_REDIS_URL = redis_url
    assert tasks.relay_outbox() == {"rows": 20, "pushed": 20}
    events = pipeline.deliver()
    exactly_once(events, 20)
    assert [e["date"] for e in events] == stamped


def test_relay_refuses_to_run_inside_a_transaction(pipeline):
    """relay() inside transaction.atomic raises OutboxMisuse (a BentoError and a RuntimeError) saying where to call
    it: its delete would commit with the caller, after its records go."""
    fill(1)
    with pytest.raises(OutboxMisuse, match=r"must not run inside a transaction .*: call it"), transaction.atomic():
        outbox.relay()
    assert issubclass(OutboxMisuse, BentoError) and issubclass(OutboxMisuse, RuntimeError)
    assert waiting() == 1


def test_an_unreachable_database_does_not_hold_back_the_others(pipeline, monkeypatch, caplog):
    """relay() over every alias relays those it can reach, logs the one it cannot, then raises that error."""
    fill(3, alias="other")
    first = connections["default"]  # relayed first: its failure must not stop "other"
    first.close()
    unreachable = {"PORT": free_port()} if first.vendor != "sqlite" else {"NAME": "/nonexistent/bento/db.sqlite3"}
    for key, value in unreachable.items():
        monkeypatch.setitem(first.settings_dict, key, value)
    with pytest.raises(DatabaseError), caplog.at_level(logging.ERROR, logger="bento_tasks"):
        outbox.relay()
    first.close()
    assert waiting("other") == 0 and len(pipeline.queued()) == 3
    assert "outbox relay on database 'default' failed" in caplog.text


def test_rows_a_crashed_relay_pushed_are_deleted_not_pushed_again(pipeline):
    """A relay that pushed rows and died before its delete committed leaves them in the table; the next relay
    finds them recorded in Redis, pushes only the others and deletes them all."""
    raws = fill(5)
    rows = [(row.pk, bytes(row.event)) for row in OutboxEvent.objects.order_by("pk")[:3]]
    assert pipeline.buffer.relay_rows("default", rows).count == 3  # what the dead relay had done
    assert outbox.relay() == outbox.Relayed(rows=5, pushed=2)
    assert pipeline.queued_raw() == raws and waiting() == 0 and pipeline.records() == 0


# -- the safety net, concurrency and kills ---------------------------------------------------------


def relay_env(tmp_path: Path) -> dict[str, str]:
    """A settings module for subprocesses: this test's databases (the test copies) and Redis."""
    databases = {
        alias: {
            **{key: connections[alias].settings_dict[key] for key in ("ENGINE", "NAME", "HOST", "PORT", "USER")},
            "OPTIONS": {"application_name": "bento-test-relay"} if connections[alias].vendor == "postgresql" else {},
        }
        for alias in connections
    }
    (tmp_path / "relay_settings.py").write_text(
        f"from {os.environ['DJANGO_SETTINGS_MODULE']} import *  # noqa: F403\n"
        f"DATABASES = {databases!r}\n"
        f"BENTO_REDIS_URL = {django_settings.BENTO_REDIS_URL!r}\n"
    )
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "tests")]),
        "DJANGO_SETTINGS_MODULE": "relay_settings",
    }


class RelayProcess:
    """tests/outbox_relay.py: relay() in a process of its own, paused (to be SIGKILLed) where told."""

    def __init__(self, env: dict[str, str], pause_at_call: int = 0, when: str = "none", wait_for_go: bool = False):
        args = [sys.executable, str(RELAY_SCRIPT), str(pause_at_call), when, "go" if wait_for_go else "now"]
        self.process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def expect(self, word: str) -> str:
        line = self.process.stdout.readline()
        assert line.startswith(word), (
            f"{line!r}\n{self.process.stderr.read() if self.process.poll() is not None else ''}"
        )
        return line

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> outbox.Relayed:
        _, rows, pushed = self.expect("RELAYED").split()
        assert self.process.wait(30) == 0, self.process.stderr.read()
        return outbox.Relayed(int(rows), int(pushed))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def relay_until_empty() -> outbox.Relayed:
    """relay() until the table is empty: rows a killed relay's session still locks are skipped until it ends."""
    total = outbox.Relayed()

    def drained() -> bool:
        nonlocal total
        total += outbox.relay()
        return waiting() == 0

    wait_until(drained, timeout=30, interval=0.2, message="the table to empty")
    return total


def test_four_relays_at_once_take_each_row_once(pipeline, tmp_path):
    """Four relay processes started together over one backlog (20,000 rows; 5,000 on SQLite): every row is
    taken by one relay only (row locks or SQLite's write lock, not the Redis record) and each event is queued
    once."""
    count = 5_000 if connection.vendor == "sqlite" else 20_000
    raws = fill(count)
    env = relay_env(tmp_path)
    relays = [RelayProcess(env, wait_for_go=True) for _ in range(4)]
    for relay in relays:
        relay.expect("READY")
    for relay in relays:
        relay.go()
    results = [relay.result() for relay in relays]
    assert sum(r.rows for r in results) == count and sum(r.pushed for r in results) == count
    if connection.vendor != "sqlite":  # SQLite serializes them: one may take every chunk in turn
        assert sum(1 for r in results if r.rows) >= 2, results  # they did run side by side
    queued = pipeline.queued_raw()
    assert len(queued) == count and sorted(queued) == sorted(raws)
    assert waiting() == 0 and pipeline.records() == 0


def test_the_after_commit_relay_racing_two_busy_relays_sends_each_event_once(pipeline, tmp_path):
    """While two relay processes relay again and again, 300 commits in this process: their rows are taken by
    whichever relay gets there first (the after-commit thread or another process), each event queued once."""
    env = relay_env(tmp_path)
    relays = [RelayProcess(env, when="loop", wait_for_go=True) for _ in range(2)]
    for relay in relays:
        relay.expect("READY")
        relay.go()
    for n in range(300):
        with transaction.atomic():
            send_event_on_commit("signup", f"user{n}@example.com")
    assert outbox._fast_path.wait_idle(30)
    for relay in relays:
        relay.go()  # stop
    taken = sum(relay.result().rows for relay in relays)
    relay_until_empty()
    assert 0 < taken <= 300  # the other relays did take part of it (the rest: the after-commit thread)
    exactly_once(pipeline.queued(), 300)
    assert waiting() == 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_relay_killed_mid_run_loses_nothing_and_sends_nothing_twice(pipeline, tmp_path, when):
    """SIGKILL of a relay on its second chunk of three, with the chunk locked and not yet pushed ("before") or
    pushed and not yet deleted ("after"): the first chunk is gone, the rest waits; a new relay moves it, and
    the fake Bento gets each of the 2,500 events exactly once."""
    fill(2500)
    killed = RelayProcess(relay_env(tmp_path), pause_at_call=2, when=when)
    killed.expect("PAUSED")
    assert len(pipeline.queued()) == (1000 if when == "before" else 2000)
    killed.kill()
    again = relay_until_empty()
    assert again == outbox.Relayed(rows=1500, pushed=1500 if when == "before" else 500)
    exactly_once(pipeline.deliver(), 2500)
    # The first chunk's records were to be dropped by the killed relay's next call: they stay until they
    # lapse (its rows are gone for good). The second chunk's go with the relay that deleted its rows.
    assert pipeline.records() == (1000 if when == "before" else 0)


def test_a_relay_whose_redis_answer_is_lost_after_the_write_sends_nothing_twice(pipeline, monkeypatch):
    """Redis runs the relay's push and the connection drops before its answer arrives: the relay fails and its
    transaction rolls back (the rows stay), and the next relay finds the rows recorded, pushes nothing and
    deletes them; the fake Bento gets each event once."""
    import redis

    fill(300)
    buffer = pipeline.buffer
    push = buffer._relay

    def push_then_hang_up(*args, **kwargs):
        push(*args, **kwargs)
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(buffer, "_relay", push_then_hang_up)
    with pytest.raises(BentoError, match="could not relay outbox rows"):
        outbox.relay()
    assert (len(pipeline.queued()), waiting()) == (300, 300)
    monkeypatch.setattr(buffer, "_relay", push)
    assert outbox.relay() == outbox.Relayed(rows=300, pushed=0)
    assert waiting() == 0
    exactly_once(pipeline.deliver(), 300)


@postgres_only
def test_a_relay_killed_between_the_redis_write_and_its_delete_sends_nothing_twice(pipeline, tmp_path):
    """A table lock (SHARE MODE: lets SELECT ... FOR UPDATE through, holds DELETE back) stops an unmodified
    relay process right after it pushed its chunk; it is SIGKILLed there. The next relay pushes nothing again
    and deletes the rows; the fake Bento gets each event once."""
    fill(300)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {outbox.TABLE} IN SHARE MODE")
        killed = RelayProcess(relay_env(tmp_path))
        wait_until(lambda: len(pipeline.queued()) == 300, timeout=30, message="the relay's push")
        wait_until(lambda: blocked_relay_sessions(cursor), timeout=10, message="the relay's DELETE to wait on the lock")
        killed.kill()
    # The killed client's session rolls back as soon as the lock lets its DELETE run and it finds no client.
    wait_until(lambda: not relay_sessions(), timeout=30, message="the killed relay's session to end")
    assert waiting() == 300
    assert relay_until_empty() == outbox.Relayed(rows=300, pushed=0)
    exactly_once(pipeline.deliver(), 300)


def relay_sessions() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'bento-test-relay'")
        return cursor.fetchall()


def blocked_relay_sessions(cursor) -> list:
    cursor.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'bento-test-relay' AND wait_event_type = 'Lock'"
    )
    return cursor.fetchall()


# -- visibility ------------------------------------------------------------------------------------


def test_status_shows_rows_waiting_and_check_fails_on_an_old_row(pipeline, tmp_path):
    """`status --json` reports outbox (rows waiting) and outbox_oldest_age; `--check --max-age` fails once the
    oldest row is older than that."""
    env = relay_env(tmp_path)

    def status(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bento_tasks", "status", *args]
        return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    empty = json.loads(status("--json").stdout)
    assert (empty["outbox"], empty["outbox_oldest_age"]) == (0, None)
    fill(3)
    OutboxEvent.objects.filter(pk=OutboxEvent.objects.order_by("pk")[0].pk).update(
        created=timezone.now() - timezone.timedelta(hours=1)
    )
    shown = json.loads(status("--json").stdout)
    assert shown["outbox"] == 3 and 3590 < shown["outbox_oldest_age"] < 3700
    stale = status("--check", "--max-age", "600")
    assert stale.returncode == 1 and "oldest outbox row is 36" in stale.stderr
    assert status("--check", "--max-age", "7200").returncode == 0


def test_manage_py_bento_relay_moves_every_waiting_row_as_bento_tasks_relay_does(pipeline, tmp_path):
    """`manage.py bento relay` relays the rows waiting and says how many, as `bento-tasks relay` does under
    DJANGO_SETTINGS_MODULE; without Django settings `bento-tasks relay` exits 2 saying where to run it."""
    env = relay_env(tmp_path)

    def run(*command: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *command], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    fill(3)
    managed = run("django", "bento", "relay", "--json")
    assert managed.returncode == 0, managed.stderr
    assert json.loads(managed.stdout) == {"rows": 3, "pushed": 3} and waiting() == 0
    OutboxEvent.objects.bulk_create([OutboxEvent(event=encoded(n)) for n in range(3, 5)])
    cli = run("bento_tasks", "relay")
    assert (cli.returncode, cli.stdout) == (0, "relayed 2 outbox row(s): 2 event(s) pushed to Redis\n"), cli.stderr
    assert waiting() == 0
    exactly_once(pipeline.queued(), 5)
    bare = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    refused = run("bento_tasks", "relay", environ={**bare, "BENTO_REDIS_URL": django_settings.BENTO_REDIS_URL})
    assert refused.returncode == 2 and "needs Django" in refused.stderr and "manage.py bento relay" in refused.stderr


def test_checks_warn_when_the_relay_is_not_on_the_beat_schedule(settings):
    """BENTO_OUTBOX on and no relay_outbox beat entry: W011, whose hint is the exact entry to add."""
    assert run_checks(tags=["bento_tasks"]) == []
    settings.CELERY_BEAT_SCHEDULE = {"bento-flush": {"task": "bento_tasks.flush_events", "schedule": 5}}
    [message] = run_checks(tags=["bento_tasks"])
    assert message.id == "bento_tasks.W011"
    assert '"bento-relay": {"task": "bento_tasks.relay_outbox", "schedule": 5}' in message.hint


def test_checks_warn_when_the_outbox_table_is_missing(tmp_path):
    """BENTO_OUTBOX on and migrations not run: `manage.py check` warns W010 with the migrate command."""
    (tmp_path / "unmigrated_settings.py").write_text(
        "from tests.django_outbox_sqlite import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(tmp_path / 'new.db')!r}}}}}\n"
    )
    code = "import django; django.setup(); from django.core.management import call_command; call_command('check')"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "unmigrated_settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "bento_tasks.W010" in done.stderr, done.stderr
    assert "Run: python manage.py migrate bento_tasks --database default" in done.stderr
