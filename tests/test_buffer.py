"""The Redis buffer and its Lua scripts, against a real redis-server."""

from __future__ import annotations

import json
import threading

import redis
from conftest import claim_events

from bento_tasks.buffer import Buffer


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
    assert buffer.redis.lrange(buffer.batch_key(batch_id), 0, -1) == items


def test_claim_on_empty_queue_returns_none(buffer):
    """An empty queue claims nothing and leaves no lease behind."""
    assert claim_events(buffer) is None
    assert buffer.inflight_batches() == 0


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


def test_reject_moves_invalid_events_to_dead_letters(buffer):
    """Rejected events leave the batch for the dead letters, with their reason."""
    buffer.push(*_events(3))
    batch_id, items = claim_events(buffer)
    left = buffer.reject(batch_id, [(items[1], "email: bad")])
    assert left == 2
    assert buffer.redis.lrange(buffer.batch_key(batch_id), 0, -1) == [items[0], items[2]]
    [letter] = buffer.dead_letters()
    assert letter.event == items[1] and letter.reason == "email: bad"


def test_reject_of_every_event_drops_the_lease(buffer):
    """A batch left empty by the flush's validation is not left in flight."""
    buffer.push(*_events(1))
    batch_id, items = claim_events(buffer)
    assert buffer.reject(batch_id, [(items[0], "bad")]) == 0
    assert buffer.inflight_batches() == 0
    assert buffer.status()["dead"] == 1


def test_begin_returns_events_and_ack_removes_them(buffer):
    """BEGIN hands over the events; ACK deletes batch and lease and counts the delivery."""
    buffer.push(*_events(10))
    batch_id, items = claim_events(buffer)
    begin = buffer.begin(batch_id, interval=0, max_sleep=1)
    assert begin.reserved and list(begin.events) == items and begin.wait == 0
    assert buffer.ack(batch_id, 10, 10, 0) is True
    status = buffer.status()
    assert (status["in_flight"], status["delivered"], status["batches_in_flight"]) == (0, 10, 0)


def test_begin_on_handed_over_batch_is_stale(buffer):
    """A message naming a batch id that was handed over does nothing."""
    buffer.push(*_events(1))
    batch_id, _ = claim_events(buffer)
    new_id = buffer.handoff(batch_id, lease=60)
    assert new_id and new_id != batch_id
    assert buffer.begin(batch_id, 0, 1).stale
    assert buffer.begin(new_id, 0, 1).reserved


def test_rate_limiter_spaces_posts_across_callers(buffer):
    """The shared GCRA gives one slot per interval; a caller beyond max_sleep gets no slot."""
    ids = []
    for _ in range(2):
        buffer.push(*_events(1))
        ids.append(claim_events(buffer)[0])
    first = buffer.begin(ids[0], interval=10, max_sleep=1)
    second = buffer.begin(ids[1], interval=10, max_sleep=1)
    assert first.reserved and first.wait == 0
    assert not second.reserved and 9 < second.wait <= 10
    third = buffer.begin(ids[1], interval=10, max_sleep=30)
    assert third.reserved and 9 < third.wait <= 10


def test_pause_blocks_begin_and_reports_who_started_it(buffer):
    """A pause holds every POST back; only the call that started it says so."""
    buffer.push(*_events(1))
    batch_id, _ = claim_events(buffer)
    started, left = buffer.pause(30)
    again, _ = buffer.pause(5)
    assert started and not again and 29 < left <= 30
    begin = buffer.begin(batch_id, 0, 1)
    assert not begin.reserved and begin.wait > 29
    assert buffer.status()["paused_until"] is not None


def test_recover_expired_hands_over_only_dead_leases(buffer, monkeypatch):
    """Only batches whose lease ran out are re-dispatched, each exactly once."""
    buffer.push(*_events(2000))
    live_id, _ = claim_events(buffer)
    dead_id, _ = claim_events(buffer)
    buffer.redis.zadd(buffer.inflight_key, {dead_id: 1})  # lease ran out long ago
    recovered = list(buffer.recover_expired())
    assert len(recovered) == 1 and recovered[0] not in (live_id, dead_id)
    assert list(buffer.recover_expired()) == []
    assert buffer.begin(dead_id, 0, 1).stale


def test_split_halves_a_batch(buffer):
    """SPLIT replaces a batch with two leased halves holding every event once."""
    buffer.push(*_events(5))
    batch_id, items = claim_events(buffer)
    left, right = buffer.split(batch_id)
    assert buffer.redis.lrange(buffer.batch_key(left), 0, -1) == items[:2]
    assert buffer.redis.lrange(buffer.batch_key(right), 0, -1) == items[2:]
    assert buffer.inflight_batches() == 2 and buffer.begin(batch_id, 0, 1).stale


def test_bury_keeps_each_event_with_reason_status_and_attempts(buffer):
    """A dead-lettered batch keeps every event, the reason, the HTTP status and the attempt count."""
    buffer.push(*_events(3))
    batch_id, items = claim_events(buffer)
    assert buffer.bury(batch_id, "retries exhausted: 503", 503, 41) == 3
    letters = buffer.dead_letters()
    assert [letter.event for letter in letters] == items
    assert buffer.dead_letters(0) == [] and len(buffer.dead_letters(2)) == 2
    assert {(letter.reason, letter.status, letter.attempts) for letter in letters} == {
        ("retries exhausted: 503", 503, 41)
    }
    assert buffer.status()["in_flight"] == 0


def test_replay_moves_dead_letters_back_to_the_queue(buffer):
    """Replay by reason puts exactly those events back on the queue."""
    buffer.push(*_events(2))
    batch_id, items = claim_events(buffer)
    buffer.reject(batch_id, [(items[0], "email: bad"), (items[1], "type: bad")])
    assert buffer.replay("email") == 1
    assert buffer.redis.lrange(buffer.queue_key, 0, -1) == [items[0]]
    assert buffer.replay() == 1
    assert buffer.status()["dead"] == 0 and buffer.status()["queued"] == 2


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
    assert buffer.inflight_batches() == 0
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
