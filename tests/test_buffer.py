"""The Redis buffer and its Lua scripts, against a real redis-server."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace

import redis
from conftest import claim_events, needs_redis_binary

from bento_tasks import scripts
from bento_tasks.buffer import Buffer, DeadLetterFilter, dead_letter_header, new_token
from bento_tasks.policy import Action, Kind


def _events(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"type": "t", "email": f"u{i}@example.com"}).encode() for i in range(start, start + n)]


def test_claim_takes_at_most_batch_size_in_order(buffer, monkeypatch):
    """A claim moves the oldest events, up to BENTO_BATCH_SIZE, into one leased batch."""
    buffer.push(*_events(2500))
    batch_id, count = buffer.claim()
    assert count == 1000
    items = buffer.redis.lrange(buffer.batch_key(batch_id), 0, -1)
    assert items == _events(1000)
    assert buffer.redis.llen(buffer.queue_key) == 1500
    assert buffer.redis.zscore(buffer.inflight_key, batch_id) is not None
    assert float(buffer.redis.hget(buffer.meta_key(batch_id), "created")) > 0
    assert buffer.redis.lrange(buffer.batch_key(batch_id), 0, -1) == items


def test_claim_on_empty_queue_returns_none(buffer):
    """An empty queue claims nothing and leaves no lease behind."""
    assert claim_events(buffer) is None
    assert buffer.batch_counts() == (0, 0)


def test_claim_stops_at_byte_budget_but_takes_an_oversized_first_event(bento_env, monkeypatch, redis_url):
    """BENTO_BATCH_MAX_BYTES cuts a batch short; a single larger event is still taken alone."""
    from bento_tasks import conf
    from bento_tasks.buffer import get_buffer

    monkeypatch.setenv("BENTO_BATCH_MAX_BYTES", "100")
    monkeypatch.setenv("BENTO_MAX_EVENT_BYTES", "100")
    conf.reset_settings()
    buffer = get_buffer()
    big = b"x" * 500
    buffer.push(big, *_events(5))
    assert claim_events(buffer)[1] == [big]
    _, items = claim_events(buffer)
    assert items == _events(2)  # each event is 40 bytes: a third would pass 100
    assert buffer.redis.llen(buffer.queue_key) == 3


def test_concurrent_claims_never_share_an_event(buffer, redis_url):
    """Eight threads claiming at once from one queue take every event exactly once."""
    buffer.push(*_events(20_000))
    taken: list[list[bytes]] = []

    def drain():
        own = Buffer(buffer.settings, redis.Redis.from_url(redis_url))
        while (claimed := claim_events(own)) is not None:
            taken.append(claimed[1])

    threads = [threading.Thread(target=drain) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [event for batch in taken for event in batch]
    assert len(flat) == 20_000
    assert set(flat) == set(_events(20_000))
    assert all(len(batch) <= 1000 for batch in taken)


def take(buffer, n: int = 3, start: int = 0):
    """Queue n events, claim them and BEGIN an attempt: (batch id, token, events, Begin)."""
    buffer.push(*_events(n, start))
    batch_id, items = claim_events(buffer)
    token = new_token()
    return batch_id, token, items, buffer.begin(batch_id, token, interval=0, max_sleep=1)


def test_reject_moves_invalid_events_to_dead_letters(buffer):
    """Rejected events leave the batch for the dead letters, with their reason."""
    batch_id, token, items, _ = take(buffer)
    left = buffer.reject(batch_id, token, [(items[1], "email: bad")])
    assert left == 2
    assert buffer.redis.lrange(buffer.batch_key(batch_id), 0, -1) == [items[0], items[2]]
    [letter] = buffer.dead_letters()
    assert letter.event == items[1] and letter.reason == "email: bad"


def test_reject_of_every_event_drops_the_lease(buffer):
    """A batch left empty by the post task's validation is not left in flight."""
    batch_id, token, items, _ = take(buffer, 1)
    assert buffer.reject(batch_id, token, [(items[0], "bad")]) == 0
    assert buffer.batch_counts() == (0, 0)
    assert buffer.status()["dead"] == 1


def test_begin_returns_events_and_record_and_ack_removes_them(buffer):
    """BEGIN hands the attempt the events and the batch's record; ACK deletes batch, record and lease and counts."""
    batch_id, token, items, begin = take(buffer, 10)
    assert begin.state == "go" and list(begin.events) == items and begin.wait == 0
    assert begin.record.size == 10 and begin.record.attempts == 0 and begin.record.created > 0
    assert buffer.execute(batch_id, token, Action(Kind.ACK, begin.record), report=_report(10)).owned
    status = buffer.status()
    assert (status["in_flight"], status["delivered"], status["batches_in_flight"]) == (0, 10, 0)
    assert not buffer.redis.exists(buffer.meta_key(batch_id))
    assert buffer.health().accepted_at is not None


def test_only_the_owning_attempt_can_act(buffer):
    """While an attempt owns a batch, a second BEGIN is refused, and no step taken with another token does anything."""
    batch_id, token, _, begin = take(buffer, 5)
    other = new_token()
    assert buffer.begin(batch_id, other, 0, 1).state == "busy"
    for action in (
        Action(Kind.ACK, begin.record),
        Action(Kind.RETRY, begin.record, delay=10),
        Action(Kind.SPLIT, begin.record, piece=2),
        Action(Kind.BURY, begin.record, reason="x"),
    ):
        assert not buffer.execute(batch_id, other, action, report=_report(5)).owned
    assert buffer.reject(batch_id, other, [(b"x", "bad")]) == -1
    status = buffer.status()
    assert (status["in_flight"], status["delivered"], status["dead"]) == (5, 0, 0)
    assert buffer.execute(batch_id, token, Action(Kind.ACK, begin.record), report=_report(5)).owned
    assert not buffer.execute(batch_id, token, Action(Kind.ACK, begin.record), report=_report(5)).owned
    assert buffer.status()["delivered"] == 5  # counted once


def test_a_retry_stores_the_record_and_defers_or_redispatches(buffer):
    """RETRY keeps the record in Redis; a short wait stays dispatched (a countdown), a long one waits deferred."""
    batch_id, token, _, begin = take(buffer, 2)
    record = replace(begin.record, attempts=3, unanswered=1, last_status=503, last_detail="down")
    done = buffer.execute(batch_id, token, Action(Kind.RETRY, record, delay=0.2, unanswered=1))
    assert done.dispatch == ((batch_id, 0.2),)
    again = buffer.begin(batch_id, new_token(), 0, 1)
    assert again.state == "go" and (again.record.attempts, again.record.unanswered) == (3, 1)
    assert again.record.last_detail == "down" and buffer.status()["unanswered"] == 1
    done = buffer.execute(batch_id, _owner(buffer, batch_id), Action(Kind.RETRY, record, delay=60))
    assert done.dispatch == () and 59 < done.wait <= 60
    assert buffer.batch_counts() == (0, 1)
    assert buffer.begin(batch_id, new_token(), 0, 1).state == "stale"  # a late message for a deferred batch


def test_rate_limiter_spaces_posts_across_callers(buffer):
    """The shared GCRA gives one slot per interval; a caller beyond max_sleep gets none and waits deferred."""
    ids = []
    for n in range(3):
        buffer.push(*_events(1, n))
        ids.append(claim_events(buffer)[0])
    first = buffer.begin(ids[0], new_token(), interval=10, max_sleep=1)
    second = buffer.begin(ids[1], new_token(), interval=10, max_sleep=1)
    assert first.state == "go" and first.wait == 0
    assert second.state == "deferred" and 9 < second.wait <= 10
    third = buffer.begin(ids[2], new_token(), interval=10, max_sleep=30)
    assert third.state == "go" and 9 < third.wait <= 10


def test_a_pause_holds_every_post_and_says_who_started_it(buffer):
    """A RETRY with a pause stops every BEGIN until it ends; only the call that started it says so."""
    batch_id, token, _, begin = take(buffer, 1)
    done = buffer.execute(batch_id, token, Action(Kind.RETRY, begin.record, delay=30, pause=30))
    assert done.pause_started and 29 < done.pause_left <= 30 and done.dispatch == ()
    *_, other = take(buffer, 1, start=1)
    assert other.state == "deferred" and other.wait > 29
    assert buffer.status()["paused_until"] is not None and buffer.status()["batches_deferred"] == 2


def test_a_held_batch_is_taken_through_a_pause_and_a_probe_and_counted_in_status(buffer):
    """BEGIN gives a held batch to its attempt at once, whatever the pause, probe or rate limit: it is only looked
    at; status counts held batches."""
    batch_id, token, _, begin = take(buffer, 3)
    buffer.execute(batch_id, token, Action(Kind.RETRY, replace(begin.record, held=True), delay=0.1))
    buffer.redis.set(buffer.paused_key, str(buffer.now() + 60))
    buffer.redis.hset(buffer.stats_key, "silent", 5)
    buffer.redis.set(buffer.probe_key, "someone else", px=60_000)
    again = buffer.begin(batch_id, new_token(), interval=10, max_sleep=1)
    assert again.state == "go" and again.wait == 0 and again.record.held and len(again.events) == 3
    assert buffer.status()["batches_held"] == 1
    *_, other = take(buffer, 1, start=10)
    assert other.state == "deferred"  # an ordinary batch still waits out the pause


def test_while_bento_answers_no_one_one_attempt_at_a_time_posts(buffer):
    """From SILENT_OUTAGE unanswered attempts on (nothing accepted), BEGIN lets one attempt post, the probe; the others
    wait for its lease; its end without an acceptance lets the next one probe; an ACK ends the run."""
    from bento_tasks.policy import SILENT_OUTAGE

    first_id, first, _, first_begin = take(buffer, 1)
    for _ in range(SILENT_OUTAGE):  # three unanswered attempts: the run that starts probing
        buffer.execute(first_id, first, Action(Kind.RETRY, first_begin.record, delay=0.1, unanswered=1))
        first = new_token()
        assert buffer.begin(first_id, first, 0, 1).state == "go"  # the last of these is the probe
    assert buffer.health().silent == SILENT_OUTAGE and buffer.redis.get(buffer.probe_key) == first.encode()
    *_, second_begin = take(buffer, 1, start=1)
    assert second_begin.state == "deferred" and second_begin.wait > buffer.settings.lease_seconds - 2
    buffer.execute(first_id, first, Action(Kind.RETRY, first_begin.record, delay=60, unanswered=1))
    assert buffer.redis.get(buffer.probe_key) is None and buffer.health().silent == SILENT_OUTAGE + 1
    third_id, third, _, third_begin = take(buffer, 1, start=2)
    assert third_begin.state == "go" and buffer.redis.get(buffer.probe_key) == third.encode()
    assert buffer.execute(third_id, third, Action(Kind.ACK, third_begin.record), report=_report(1)).owned
    assert buffer.health().silent == 0 and buffer.redis.get(buffer.probe_key) is None
    *_, fourth = take(buffer, 1, start=3)
    assert fourth.state == "go" and buffer.redis.get(buffer.probe_key) is None  # no run: no probe taken


def test_resume_ends_the_pause_and_makes_waiting_batches_due(buffer):
    """resume clears the pause (not the run of identical refusals); the next release dispatches every deferred
    batch at once."""
    batch_id, token, _, begin = take(buffer, 1)
    buffer.execute(batch_id, token, Action(Kind.RETRY, begin.record, delay=300, pause=300))
    buffer.redis.hset(buffer.refusals_key, mapping={"answer": "400 x", "count": 5})
    assert buffer.release_deferred(10) == []
    assert buffer.resume() == (True, 1)
    assert buffer.status()["paused_until"] is None and buffer.health().refusals == 5
    assert buffer.release_deferred(10) == [(batch_id, 0.0)]
    assert buffer.begin(batch_id, new_token(), 0, 1).state == "go"
    assert buffer.resume() == (False, 0)


def test_release_dispatches_batches_due_before_the_next_flush(buffer):
    """Deferred batches due within one flush interval come back with the countdown left; later ones stay."""
    soon_id, soon_token, _, soon = take(buffer, 1)
    late_id, late_token, _, late = take(buffer, 1, start=1)
    buffer.execute(soon_id, soon_token, Action(Kind.RETRY, soon.record, delay=0.2))  # dispatched: within horizon
    buffer.redis.zadd(buffer.deferred_key, {soon_id: buffer.now() + 0.3})  # as if deferred earlier
    buffer.redis.zrem(buffer.inflight_key, soon_id)
    buffer.execute(late_id, late_token, Action(Kind.RETRY, late.record, delay=60))
    [(released, countdown)] = buffer.release_deferred(10)
    assert released == soon_id and 0 < countdown <= 0.3
    assert buffer.batch_counts() == (1, 1)


def test_expired_leases_are_reported_with_their_owner(buffer):
    """A lapsed lease is reported once per flush, with the owning attempt's token when one had taken the batch."""
    buffer.push(*_events(1000))
    orphan, _ = claim_events(buffer)
    owned, token, _, _ = take(buffer, 1, start=5000)
    buffer.push(*_events(1, 6000))
    live, _ = claim_events(buffer)  # dispatched, lease still running
    for batch_id in (orphan, owned):
        buffer.redis.zadd(buffer.inflight_key, {batch_id: 1})  # lease ran out long ago
    expired = {e.batch_id: e for e in buffer.expired()}
    assert set(expired) == {orphan, owned}
    assert expired[orphan].owner == "" and expired[owned].owner == token
    assert expired[orphan].record.size == 1000 and expired[owned].record.size == 1
    # re-dispatching the orphan (no owner): the same id, a new lease, nothing counted
    done = buffer.execute(orphan, "", Action(Kind.RETRY, expired[orphan].record), recovering=True)
    assert done.dispatch == ((orphan, 0.0),)
    assert {e.batch_id for e in buffer.expired()} == {owned}
    assert not buffer.execute(live, "", Action(Kind.RETRY, expired[orphan].record), recovering=True).owned


def test_split_cuts_into_pieces_that_inherit_the_copy_counters(buffer):
    """SPLIT replaces a batch with leased pieces holding every event once; pieces keep unanswered, deaths and cuts,
    and are never held."""
    batch_id, token, items, begin = take(buffer, 5)
    record = replace(begin.record, attempts=7, isolated=3, unanswered=2, deaths=1, cuts=1, first_failure=123.0)
    buffer.execute(batch_id, token, Action(Kind.RETRY, replace(record, held=True), delay=0.1))
    token = new_token()
    assert buffer.begin(batch_id, token, 0, 1).record.held
    done = buffer.execute(batch_id, token, Action(Kind.SPLIT, record, piece=2, deaths=1))
    pieces = [piece for piece, _ in done.dispatch]
    assert [buffer.redis.lrange(buffer.batch_key(p), 0, -1) for p in pieces] == [items[:2], items[2:4], items[4:]]
    assert buffer.batch_counts() == (3, 0) and buffer.begin(batch_id, new_token(), 0, 1).state == "stale"
    piece = buffer.begin(pieces[0], new_token(), 0, 1).record
    assert (piece.attempts, piece.isolated, piece.unanswered, piece.deaths, piece.cuts) == (0, 0, 2, 1, 1)
    assert not piece.held
    assert piece.first_failure == 123.0 and piece.created >= record.created
    assert buffer.status()["worker_deaths"] == 1


def test_bury_keeps_each_event_with_reason_status_and_attempts(buffer):
    """A dead-lettered batch keeps every event, the reason, the HTTP status and the attempt count."""
    batch_id, token, items, begin = take(buffer, 3)
    record = replace(begin.record, attempts=41, last_status=503)
    assert buffer.execute(batch_id, token, Action(Kind.BURY, record, reason="retries exhausted: 503")).buried == 3
    letters = buffer.dead_letters()
    assert [letter.event for letter in letters] == items
    assert buffer.dead_letters(0) == [] and len(buffer.dead_letters(2)) == 2
    assert {(letter.reason, letter.status, letter.attempts) for letter in letters} == {
        ("retries exhausted: 503", 503, 41)
    }
    assert buffer.status()["in_flight"] == 0


def test_refused_singles_build_a_run_that_an_accept_ends(buffer):
    """Each refused single extends the run of identical answers; another answer restarts it; an ACK ends it."""
    for n, answer in enumerate(["422 x", "422 x", "400 y"]):
        batch_id, token, _, begin = take(buffer, 1, start=n)
        buffer.execute(batch_id, token, Action(Kind.BURY, begin.record, reason="refused", refusal=answer))
        if n == 1:
            assert (buffer.health().refusal, buffer.health().refusals) == ("422 x", 2)
    assert (buffer.health().refusal, buffer.health().refusals) == ("400 y", 1)
    batch_id, token, _, begin = take(buffer, 1, start=9)
    buffer.execute(batch_id, token, Action(Kind.ACK, begin.record), report=_report(1))
    assert buffer.health().refusals == 0


def test_replay_moves_dead_letters_back_to_the_queue(buffer):
    """Replay by reason puts exactly those events back on the queue."""
    batch_id, token, items, _ = take(buffer, 2)
    buffer.reject(batch_id, token, [(items[0], "email: bad"), (items[1], "type: bad")])
    assert buffer.replay(DeadLetterFilter(reason="email")) == 1
    assert buffer.redis.lrange(buffer.queue_key, 0, -1) == [items[0]]
    assert buffer.replay(DeadLetterFilter()) == 1
    assert buffer.status()["dead"] == 0 and buffer.status()["queued"] == 2


@needs_redis_binary
def test_replay_by_reason_walks_a_large_mix_once(buffer, monkeypatch):
    """Across many windows, replay --reason moves exactly the matching letters, in order, and keeps the others in
    order, matching the reason in the header only; and it is linear: one REPLAY call per window (ceil(n / window)),
    each examining its window once, and no other per-letter command (Redis's own command counts)."""
    from bento_tasks import buffer as buffer_module

    window = 40
    monkeypatch.setattr(buffer_module, "REPLAY_WINDOW", window)
    letters = []
    for n in range(600):
        # The first 200 all kept (the case an LREM walk made quadratic), then a mix.
        reason = "unanswered: no answer" if n >= 200 and n % 3 == 0 else "Bento refused the event"
        event = json.dumps({"type": "t", "email": f"u{n}@example.com", "fields": {"note": "unanswered"}}).encode()
        letters.append((reason, event))
    buffer.redis.rpush(buffer.dead_key, *[dead_letter_header(r) + b"\n" + e for r, e in letters], b"not a letter")
    examined = []
    replay = buffer._replay

    def counted(*args, **kwargs):
        result = replay(*args, **kwargs)
        examined.append(result[0])
        return result

    monkeypatch.setattr(buffer, "_replay", counted)
    buffer.redis.script_load(scripts.REPLAY)  # so no NOSCRIPT round trip is counted
    buffer.redis.config_resetstat()
    matching = [e for r, e in letters if r.startswith("unanswered")]
    assert buffer.replay(DeadLetterFilter(reason="unanswered")) == len(matching) == 133
    calls = {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in buffer.redis.info("commandstats").items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    windows = math.ceil(601 / window)
    assert examined == [window] * (windows - 1) + [601 % window]
    assert calls.pop("evalsha") == calls.pop("lpop") == windows and calls.pop("rpush") <= 2 * windows
    assert calls == {"llen": 1}
    assert buffer.redis.lrange(buffer.queue_key, 0, -1) == matching
    kept = buffer.redis.lrange(buffer.dead_key, 0, -1)
    assert [k.partition(b"\n")[2] for k in kept[:-1]] == [e for r, e in letters if not r.startswith("unanswered")]
    assert kept[-1] == b"not a letter"


def test_purge_deletes_every_dead_letter(buffer):
    """purge_dead empties the list and says how many it deleted."""
    buffer.redis.rpush(buffer.dead_key, *[dead_letter_header("x") + b"\n{}" for _ in range(5)])
    assert buffer.purge_dead() == 5 and buffer.status()["dead"] == 0


def test_memory_policy_is_read_from_redis(buffer):
    """The buffer reads maxmemory-policy (noeviction on the test server), and sees it change."""
    assert buffer.memory_policy() == "noeviction"
    buffer.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert buffer.memory_policy() == "allkeys-lru" and buffer.status()["maxmemory_policy"] == "allkeys-lru"
    finally:
        buffer.redis.config_set("maxmemory-policy", "noeviction")


def _report(size: int) -> dict[str, int]:
    return {"batch_size": size, "results": size, "failed": 0}


def _owner(buffer, batch_id: str) -> str:
    return buffer.redis.hget(buffer.meta_key(batch_id), "owner").decode()


def test_scripts_survive_a_script_flush(buffer):
    """After Redis forgets its scripts (a restart), calls by SHA reload them transparently."""
    buffer.push(*_events(1))
    buffer.redis.script_flush()
    assert claim_events(buffer) is not None


def test_status_counts_events_not_batches(buffer):
    """status reports queued, in-flight and dead as numbers of events."""
    buffer.push(*_events(1500))
    claim_events(buffer)
    status = buffer.status()
    assert (status["queued"], status["in_flight"], status["dead"], status["batches_in_flight"]) == (500, 1000, 0, 1)


def test_full_only_claim_leaves_a_short_queue_alone(buffer):
    """full_only claims nothing from a queue shorter than a batch, and keeps its order."""
    buffer.push(*_events(999))
    assert claim_events(buffer, full_only=True) is None
    assert buffer.redis.lrange(buffer.queue_key, 0, -1) == _events(999)
    assert buffer.batch_counts() == (0, 0)
    buffer.push(*_events(1, start=999))
    assert len(claim_events(buffer, full_only=True)[1]) == 1000


def _queued(buffer) -> list[bytes]:
    return buffer.redis.lrange(buffer.queue_key, 0, -1)


def _record_keys(buffer) -> list[bytes]:
    return sorted(buffer.redis.keys("{bento}:outbox:*"))


def test_relay_rows_pushes_a_row_once_until_its_records_are_dropped(buffer):
    """RELAY pushes outbox rows in order and records them; the same rows again push nothing; once the records are
    dropped (the delete committed) no record is left in Redis."""
    rows = list(enumerate(_events(3), start=1))
    first = buffer.relay_rows("default", rows)
    assert first.count == 3 and _queued(buffer) == _events(3)
    assert buffer.relay_rows("default", rows).count == 0  # a relay retrying after a crash
    retry = buffer.relay_rows("default", [*rows, (4, _events(1, 3)[0])])
    assert retry.count == 1 and _queued(buffer) == _events(4)
    buffer.forget_relayed(first)
    assert buffer.relay_rows("default", rows[:1]).count == 1  # forgotten: would be pushed again
    buffer.forget_relayed(retry)  # a retry's records cover every row it took, pushed or skipped
    assert _record_keys(buffer) == []


def test_a_relay_call_drops_the_records_it_is_handed(buffer):
    """The records of the previous chunk ride in the next chunk's call and are dropped there."""
    first = buffer.relay_rows("default", list(enumerate(_events(2), start=1)))
    second = buffer.relay_rows("default", list(enumerate(_events(2, 2), start=3)), forget=first)
    assert buffer.relay_rows("default", list(enumerate(_events(2), start=1))).count == 2  # first's records gone
    assert buffer.relay_rows("default", list(enumerate(_events(2, 2), start=3))).count == 0  # second's kept
    assert second.count == 2


def test_a_reused_row_id_with_another_event_is_a_new_row(buffer):
    """Records hold a digest of the event: a restored database or reset sequence reusing an id is not skipped."""
    old, new = _events(2)
    buffer.relay_rows("default", [(7, old)])
    assert buffer.relay_rows("default", [(7, new)]).count == 1
    assert _queued(buffer) == [old, new]


def test_relay_records_are_kept_apart_per_database_alias(buffer):
    """Row 1 of one database and row 1 of another, even with the same bytes, are both pushed."""
    [event] = _events(1)
    assert buffer.relay_rows("default", [(1, event)]).count == 1
    assert buffer.relay_rows("other", [(1, event)]).count == 1
    assert buffer.relay_rows("other", [(1, event)]).count == 0


def test_a_record_outlives_the_change_of_period(buffer, monkeypatch):
    """A row pushed at the end of one period is still recorded in the next; records lapse with their set."""
    from bento_tasks import buffer as module

    rows = list(enumerate(_events(2), start=1))
    start = 1000 * module.RELAY_MEMORY
    monkeypatch.setattr(module.time, "time", lambda: start - 1)
    pushed = buffer.relay_rows("default", rows)
    monkeypatch.setattr(module.time, "time", lambda: start + 1)
    assert buffer.relay_rows("default", rows).count == 0
    monkeypatch.setattr(module.time, "time", lambda: start + module.RELAY_MEMORY + 1)
    assert buffer.relay_rows("default", rows).count == 2  # two periods later: a retry that late pushes again
    assert 0 < buffer.redis.ttl(pushed.key) <= 2 * module.RELAY_MEMORY


def test_relay_rows_raises_buffer_unavailable_when_redis_is_down(bento_env, monkeypatch):
    """An unreachable Redis is BufferUnavailable, so the relay's transaction rolls back and the rows stay."""
    import pytest
    from conftest import free_port

    from bento_tasks import BufferUnavailable, conf
    from bento_tasks.buffer import get_buffer

    monkeypatch.setenv("BENTO_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    conf.reset_settings()
    with pytest.raises(BufferUnavailable, match="could not relay outbox rows"):
        get_buffer().relay_rows("default", [(1, _events(1)[0])])
