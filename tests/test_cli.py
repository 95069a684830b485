"""``bento-tasks`` / ``python -m bento_tasks``: run as real subprocesses against the private Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, free_port, run_cli, wait_until

from bento_tasks import conf, tasks, track
from bento_tasks.client import Verdict, post_events


@pytest.mark.parametrize("module", [True, False], ids=["python -m", "console script"])
def test_status_json_counts_events(bento_env, buffer, module):
    """status --json prints one object whose counts are numbers of events."""
    for i in range(1200):
        track("signup", f"u{i}@example.com")
    buffer.claim()
    result = run_cli(bento_env, "status", "--json", module=module)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["queued"], status["in_flight"], status["dead"]) == (200, 1000, 0)
    counts = ("queued", "in_flight", "dead", "delivered", "failed", "unanswered", "worker_deaths", "batches_deferred")
    assert all(isinstance(status[k], int) for k in counts)
    assert status["paused_until"] is None and 0 <= status["oldest_queued_age"] < 60
    assert status["maxmemory_policy"] == "noeviction"
    assert status["outbox"] is None and status["outbox_oldest_age"] is None  # no Django, no outbox
    assert bento_env["BENTO_SECRET_KEY"] not in result.stdout + result.stderr


def test_status_table_is_readable(bento_env, buffer):
    """Without --json, status prints one aligned 'name value' line per figure."""
    result = run_cli(bento_env, "status")
    assert result.returncode == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["queued"] == "0" and lines["paused_until"] == "-"


def test_status_check_fails_when_paused_or_stale(bento_env, buffer):
    """status --check exits 1 while delivery is paused or the oldest event is older than --max-age."""
    assert run_cli(bento_env, "status", "--check").returncode == 0
    buffer.mark_flushed()  # a beat is running
    track("signup", "old@example.com", date="2020-01-01T00:00:00+00:00")
    stale = run_cli(bento_env, "status", "--check", "--max-age", "60")
    assert stale.returncode == 1 and "oldest queued event" in stale.stderr
    assert run_cli(bento_env, "status", "--check", "--max-age", "1e12").returncode == 0
    pause(buffer, 60)
    paused = run_cli(bento_env, "status", "--check", "--max-age", "1e12")
    assert paused.returncode == 1 and "paused" in paused.stderr


def test_status_and_dead_need_no_keys(bento_env, buffer):
    """status and dead list work with only BENTO_REDIS_URL: no Bento key is read by an operator's command."""
    env = {k: v for k, v in bento_env.items() if k not in conf.KEYS}
    assert run_cli(env, "status", "--check").returncode == 0
    assert run_cli(env, "dead", "list").returncode == 0


def test_refused_setting_is_named(bento_env):
    """A refused value exits 2 with a message naming the setting and what it expects."""
    result = run_cli({**bento_env, "BENTO_BATCH_SIZE": "lots"}, "status")
    assert result.returncode == 2 and "BENTO_BATCH_SIZE is 'lots': expected a whole number" in result.stderr


def pause(buffer, seconds: float) -> None:
    buffer.redis.set(buffer.paused_key, str(buffer.now() + seconds))


def test_resume_ends_the_pause_and_makes_waiting_batches_due(bento_env, buffer):
    """resume ends a pause and makes every deferred batch due now; the health check passes again."""
    for i in range(3):
        track("signup", f"u{i}@example.com")
    batch_id, _ = buffer.claim()
    pause(buffer, 3600)
    assert buffer.begin(batch_id, "attempt", interval=0, max_sleep=1).state == "deferred"
    result = run_cli(bento_env, "resume")
    assert result.returncode == 0, result.stderr
    assert "pause ended" in result.stdout and "1 waiting batch(es) go at the next flush" in result.stdout
    assert buffer.status()["paused_until"] is None
    assert buffer.release_deferred(10) == [(batch_id, 0.0)]
    assert run_cli(bento_env, "status", "--check").returncode == 0
    again = run_cli(bento_env, "resume")
    assert "not paused" in again.stdout and "0 waiting" in again.stdout


def test_dead_list_replay_and_purge(bento_env, buffer):
    """dead list shows event, reason, status and time; replay --reason requeues; purge needs --yes."""
    buffer.bury_event(b'{"type":"t","email":"bad"}', "invalid Bento event: email: Not a valid email address.")
    buffer.bury_event(b'{"type":"t","email":"a@example.com","x":1}', "invalid Bento event: x: Unknown field.")

    listed = json.loads(run_cli(bento_env, "dead", "list", "--json").stdout)
    letters = listed["dead_letters"]
    assert [letter["event"]["email"] for letter in letters] == ["bad", "a@example.com"]
    assert all({"reason", "status", "time", "attempts"} <= set(letter) for letter in letters)
    human = run_cli(bento_env, "dead", "list").stdout
    assert "Not a valid email address" in human and "2 dead letter(s)" in human

    assert run_cli(bento_env, "dead", "replay").returncode == 2  # says which: --all or --reason
    assert "1 event(s)" in run_cli(bento_env, "dead", "replay", "--reason", "Unknown field").stdout
    assert buffer.status()["queued"] == 1 and buffer.status()["dead"] == 1

    refused = run_cli(bento_env, "dead", "purge")
    assert refused.returncode == 2 and buffer.status()["dead"] == 1
    assert "1 dead letter(s) deleted" in run_cli(bento_env, "dead", "purge", "--yes").stdout
    assert buffer.status()["dead"] == 0


def test_status_names_the_redis_and_the_settings_source(bento_env, redis_url):
    """status says which Redis it read (host, port, db; never a password) and where settings came from."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    status = json.loads(run_cli(bento_env, "status", "--json").stdout)
    assert status["redis"] == {"host": "127.0.0.1", "port": port, "db": 0}
    assert status["settings"] == "the environment"
    human = run_cli(bento_env, "status")
    assert f"127.0.0.1:{port} db 0" in human.stdout and "the environment" in human.stdout
    # This Redis has no such user, so it refuses the login: the answer still names the server, not the password.
    # (A password alone is no refusal for redis-py 8: its RESP3 HELLO logs in as "default", which takes any.)
    env = {**bento_env, "BENTO_REDIS_URL": f"redis://bento-nobody:not-shown@127.0.0.1:{port}/0"}
    for args in (("status",), ("status", "--json")):
        refused = run_cli(env, *args)
        assert f"127.0.0.1:{port} db 0" in refused.stdout + refused.stderr
        assert "not-shown" not in refused.stdout + refused.stderr


@pytest.mark.parametrize("args", [("status",), ("status", "--check", "--json"), ("dead", "list")])
def test_redis_down_is_one_line_or_a_json_error_and_exit_2(bento_env, args):
    """With Redis unreachable, status (and dead list) print one line, or with --json one JSON object with an
    `error` string, and exit 2: never a traceback."""
    env = {**bento_env, "BENTO_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_cli(env, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    if "--json" in args:
        answer = json.loads(result.stdout)
        assert "127.0.0.1:1 db 0 is unavailable" in answer["error"] and answer["redis"]["port"] == 1
    else:
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert "is unavailable" in result.stderr


def test_status_check_fails_when_no_flush_ran_for_three_intervals(bento_env, buffer, dispatches):
    """A worker without beat: status reports last_flush_age, and --check fails once no flush ran for three
    BENTO_FLUSH_INTERVALs (0.5 s here) or events wait and none ever ran."""
    track("signup", "queued@example.com", date="2020-01-01T00:00:00Z")
    never = run_cli(bento_env, "status", "--check", "--max-age", "1e12")
    assert never.returncode == 1 and "no flush has ever run" in never.stderr
    tasks.flush_events.run()
    fresh = run_cli(bento_env, "status", "--check", "--json", "--max-age", "1e12")
    assert fresh.returncode == 0, fresh.stderr
    assert 0 <= json.loads(fresh.stdout)["last_flush_age"] < 1.5
    wait_until(lambda: buffer.status()["last_flush_age"] > 1.5, 5, message="the flush to age")
    stale = run_cli(bento_env, "status", "--check", "--max-age", "1e12")
    assert stale.returncode == 1 and "no flush ran for" in stale.stderr and "beat" in stale.stderr


def test_fake_bento_command_prints_settings_and_serves_until_ctrl_c(bento_env):
    """`bento-tasks fake-bento --port N` prints the BENTO_* export lines, accepts what bento-tasks POSTs with
    them, prints each request, and exits 0 on Ctrl-C (SIGINT)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bento_tasks", "fake-bento", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        exports = {}
        while len(exports) < 4:
            line = process.stdout.readline()
            assert line, "fake-bento exited before printing its settings"
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = value
        assert exports["BENTO_API_URL"] == f"http://127.0.0.1:{port}/api/v1"
        settings = conf.Settings(**{conf.SPECS[name].attr: value for name, value in exports.items()})
        outcome = post_events(settings, [b'{"type":"$signup","email":"a@example.com"}'])
        assert outcome.verdict is Verdict.DELIVERED
        assert "200: 1 event(s) $signup" in process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0 and "1 event(s) accepted" in out
