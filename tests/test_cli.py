"""``bento-tasks`` / ``python -m bento_tasks``: run as real subprocesses against the private Redis."""

from __future__ import annotations

import json

import pytest
from conftest import claim_events, run_cli

from bento_tasks import track


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
    assert all(isinstance(status[k], int) for k in ("queued", "in_flight", "dead", "delivered", "failed"))
    assert status["paused_until"] is None and 0 <= status["oldest_queued_age"] < 60
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
    track("signup", "old@example.com", date="2020-01-01T00:00:00+00:00")
    stale = run_cli(bento_env, "status", "--check", "--max-age", "60")
    assert stale.returncode == 1 and "oldest queued event" in stale.stderr
    assert run_cli(bento_env, "status", "--check", "--max-age", "1e12").returncode == 0
    buffer.pause(60)
    paused = run_cli(bento_env, "status", "--check", "--max-age", "1e12")
    assert paused.returncode == 1 and "paused" in paused.stderr


def test_missing_setting_is_named(bento_env):
    """A missing required setting exits 2 with a message naming it."""
    env = {k: v for k, v in bento_env.items() if k != "BENTO_SITE_UUID"}
    result = run_cli(env, "status")
    assert result.returncode == 2 and "BENTO_SITE_UUID" in result.stderr


def test_dead_list_replay_and_purge(bento_env, buffer):
    """dead list shows event, reason, status and time; replay --reason requeues; purge needs --yes."""
    buffer.push(b'{"type":"t","email":"bad"}', b'{"type":"t","email":"a@example.com","x":1}')
    batch_id, items = claim_events(buffer)
    buffer.reject(batch_id, [(items[0], "invalid Bento event: email: Not a valid email address.")])
    buffer.reject(batch_id, [(items[1], "invalid Bento event: x: Unknown field.")])

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
