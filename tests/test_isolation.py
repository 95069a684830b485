"""Fenced attempts and poison isolation, driven in this process against the real Redis and the real fake Bento.

Rows of issue 10's experiment table that need no worker process: the same message run twice at
once (row 1), one event Bento answers 500 for (row 4), Bento recording every batch and hanging up
(row 5); and the rules around them: an outage splits and dead-letters nothing, the same refusal
for several events pauses. Rows 2, 3 and 6 need real workers: tests/test_faults.py and
tests/test_redis_faults.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import replace

from conftest import configure, queue_events

from bento_tasks import tasks
from bento_tasks.buffer import new_token
from bento_tasks.conf import get_settings
from bento_tasks.policy import Action, Kind, outage_window

POISON = "user537@example.com"


def drive(dispatches, until, timeout: float = 30.0, between=None) -> None:
    """Run what was dispatched (one round: not what those runs dispatch) and flush, as workers and beat would,
    until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out driving the pipeline"
        dispatches.run_all(limit=len(dispatches.pending))
        if between is not None:
            between()
        tasks.flush_events.run()
        time.sleep(0.05)


def held_batch_id(buffer) -> str:
    """The one claimed batch, wherever it waits (dispatched or deferred)."""
    keys = (buffer.inflight_key, buffer.deferred_key)
    [batch_id] = [b.decode() for key in keys for b in buffer.redis.zrange(key, 0, -1)]
    return batch_id


def test_the_same_message_run_twice_at_once_posts_the_batch_once(buffer, dispatches, fake):
    """Row 1: two runs of one post_batch message at once: one POST, the other does nothing, delivered counts once."""
    queue_events(500)
    tasks.flush_events.run()
    [(batch_id, _)] = dispatches.pending
    fake.delay = 0.5  # both runs overlap the POST
    results: list[str] = []
    runs = [threading.Thread(target=lambda: results.append(dispatches.task.run(batch_id))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sorted(results) == ["busy", "delivered"]
    assert len(fake.requests) == 1 and len(fake.events) == 500
    assert buffer.status()["delivered"] == 500
    assert dispatches.task.run(batch_id) == "stale"  # a late copy after the ACK


def test_one_event_bento_answers_500_for_ends_alone_in_the_dead_letters(monkeypatch, buffer, dispatches, fake):
    """Row 4: Bento answers 500 for any batch holding one event while it accepts others: the batch is cut down
    until that event is alone in the dead letters; its 999 neighbours are delivered, in a few dozen POSTs."""
    configure(monkeypatch, BENTO_BATCH_SIZE="100")
    fake.reject_events(lambda event: event["email"] == POISON, status=500)
    queue_events(1000)
    traffic = iter(range(10_000, 20_000, 20))  # the site keeps sending events meanwhile
    drive(dispatches, lambda: buffer.status()["dead"] == 1, between=lambda: queue_events(20, next(traffic)))
    [letter] = buffer.dead_letters()
    assert json.loads(letter.event)["email"] == POISON and letter.status == 500
    assert "while accepting other batches" in letter.reason
    delivered = Counter(event["email"] for event in fake.events)
    assert all(delivered[f"user{i}@example.com"] == 1 for i in range(1000) if i != 537)
    with_poison = [r for r in fake.requests if POISON in r.body.decode()]
    print(f"\nrow 4: {len(fake.requests)} POSTs, {len(with_poison)} holding the poison, 1 dead letter")
    # 100 -> 50 -> 25 -> 13 -> 7 -> 4 -> 2 -> 1: eight batches, each cut after BENTO_ISOLATE_AFTER (3) failures
    # once Bento accepted a batch claimed no earlier; its first failure may come before that (its sibling
    # is posted after it): at most one more each. The old way: 41 POSTs, the neighbours dead-lettered too.
    assert len(with_poison) <= 8 * (3 + 1)


def test_an_outage_splits_and_dead_letters_nothing(monkeypatch, buffer, dispatches, fake):
    """Bento failing every request (nothing accepted) keeps each batch whole and out of the dead letters."""
    configure(monkeypatch, BENTO_BATCH_SIZE="100", BENTO_RETRY_BACKOFF_MAX="0.3")
    fake.fail_for(120, status=503)
    queue_events(300)
    tasks.flush_events.run()
    ids = {batch_id for batch_id, _ in dispatches.pending}

    def attempts() -> list[int]:
        return [int(buffer.redis.hget(buffer.meta_key(b), "attempts") or 0) for b in ids]

    drive(dispatches, lambda: min(attempts()) >= 10)
    status = buffer.status()
    assert (status["dead"], status["batches_in_flight"], status["in_flight"]) == (0, 3, 300)
    assert {b.decode() for b in buffer.redis.zrange(buffer.inflight_key, 0, -1)} | {
        b.decode() for b in buffer.redis.zrange(buffer.deferred_key, 0, -1)
    } == ids


def test_bento_recording_every_batch_and_hanging_up_makes_a_bounded_number_of_copies(buffer, dispatches, fake):
    """Row 5: Bento records each batch, then closes the connection without answering, every time: the batch is sent
    BENTO_MAX_UNANSWERED (3) times, then held whole, not dead-lettered; once Bento accepts another batch the held one
    is cut into pieces of 32 and delivered: 4 copies of each event, within the README's bound of 5."""
    fake.hang_up(None)
    queue_events(500)
    emails = {f"user{i}@example.com" for i in range(500)}
    drive(dispatches, lambda: buffer.status()["batches_held"] == 1)
    status = buffer.status()
    print(f"\nrow 5: {len(fake.requests)} POSTs, {len(fake.events) - 500} duplicates, {status['dead']} dead, held")
    assert len(fake.requests) == 3 and len(fake.events) == 1500  # 3 copies, the README's bound without evidence
    assert (status["unanswered"], status["delivered"], status["dead"], status["in_flight"]) == (3, 0, 0, 500)
    fake.heal()
    queue_events(10, start=1000)  # the site sends on: that batch shows Bento answers again
    later = {f"user{i}@example.com" for i in range(1000, 1010)}
    drive(dispatches, lambda: buffer.status()["delivered"] == 510)
    copies = Counter(event["email"] for event in fake.events)
    assert {copies[email] for email in emails} == {4} and {copies[email] for email in later} == {1}
    assert len(fake.requests) == 3 + 1 + 16 and buffer.status()["dead"] == 0


def test_a_held_batch_is_dead_lettered_once_the_outage_window_is_over(monkeypatch, buffer, dispatches, fake):
    """Bento never answers again and nothing else is accepted: the held batch is dead-lettered as 'unanswered' only
    once the outage window (the shortest span of BENTO_MAX_RETRIES retries) has passed since its first failure."""
    configure(monkeypatch, BENTO_MAX_RETRIES="10")  # a 4.2 s window (BENTO_RETRY_BACKOFF 0.2 s, cap 1 s)
    window = outage_window(get_settings())
    fake.hang_up(None)
    queue_events(100)
    drive(dispatches, lambda: buffer.status()["batches_held"] == 1)
    batch_id = held_batch_id(buffer)
    first_failure = float(buffer.redis.hget(buffer.meta_key(batch_id), "first_failure"))
    last_seen_whole = first_failure

    def buried() -> bool:
        nonlocal last_seen_whole
        if buffer.status()["dead"] == 0:
            last_seen_whole = buffer.now()  # Redis's clock, as first_failure
            return False
        return True

    drive(dispatches, buried)
    # Still kept at the last look before the burial, which the loop takes every ~0.1 s.
    assert last_seen_whole - first_failure >= window - 0.5
    letters = buffer.dead_letters()
    assert buffer.status()["dead"] == 100 and len(fake.requests) == 3
    assert {letter.reason.split(":")[0] for letter in letters} == {"unanswered"}
    assert buffer.status()["batches_held"] == 0


def test_a_look_at_a_held_batch_cut_short_counts_no_worker_death(buffer, dispatches, fake):
    """A held batch's attempt posts nothing, so its lease running out is no death: the batch stays held, whole."""
    fake.hang_up(None)
    queue_events(100)
    drive(dispatches, lambda: buffer.status()["batches_held"] == 1)
    batch_id = held_batch_id(buffer)
    buffer.redis.zrem(buffer.deferred_key, batch_id)
    buffer.redis.zadd(buffer.inflight_key, {batch_id: buffer.now()})  # due now
    assert buffer.begin(batch_id, new_token(), 0, 1).record.held  # its worker dies here, before deciding
    buffer.redis.zadd(buffer.inflight_key, {batch_id: 1})  # the lease ran out long ago
    tasks.flush_events.run()
    status = buffer.status()
    assert (status["worker_deaths"], status["batches_held"], status["dead"], len(fake.requests)) == (0, 1, 0, 3)
    assert buffer.redis.hget(buffer.meta_key(batch_id), "deaths") in (None, b"0")


def test_held_batches_leave_room_for_new_ones(monkeypatch, buffer, dispatches, fake):
    """Under a rate limit the flush keeps about two ticks of batches in flight; held ones do not count, or a hang
    outage could fill the room with held batches and nothing would ever be sent to show Bento is back."""
    configure(monkeypatch, BENTO_RATE_LIMIT="60", BENTO_BATCH_SIZE="10")  # room: 2 batches (one POST a tick)
    for start in (0, 10):
        queue_events(10, start=start)
        batch_id, _ = buffer.claim()
        token = new_token()
        record = buffer.begin(batch_id, token, 0, 1).record
        buffer.execute(batch_id, token, Action(Kind.RETRY, replace(record, unanswered=3, held=True), delay=600))
    assert buffer.status()["batches_held"] == 2
    queue_events(10, start=20)
    assert tasks.flush_events.run()["dispatched"] == 1


def test_the_same_refusal_for_several_single_events_pauses_instead(monkeypatch, buffer, dispatches, fake, caplog):
    """When every event gets the same 400, three are dead-lettered, then delivery pauses with the rest kept;
    resuming with the cause unfixed pauses again at once."""
    configure(monkeypatch, BENTO_BATCH_SIZE="8", BENTO_CONFIG_ERROR_PAUSE="600")
    fake.reject_events(lambda event: True, status=400)
    queue_events(8)
    with caplog.at_level(logging.ERROR, logger="bento_tasks"):
        drive(dispatches, lambda: buffer.status()["paused_until"] is not None and not dispatches.pending)
    status = buffer.status()
    assert (status["dead"], status["in_flight"]) == (3, 5)
    assert any("same answer" in r.getMessage() and "delivery paused" in r.getMessage() for r in caplog.records)
    assert buffer.resume()[0]
    drive(dispatches, lambda: buffer.status()["paused_until"] is not None and not dispatches.pending)
    assert buffer.status()["dead"] == 3
