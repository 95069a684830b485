"""Bad input, thrown by hypothesis: nothing crashes the flush, nothing invalid reaches Bento,
every rejected event is in the dead letters with a reason.

The fake Bento validates bodies on its own (it shares no code with bento_tasks), so a 400 from
it would mean our schemas let something through that Bento documents as invalid.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_tasks import InvalidEvent, send_event, tasks, track

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.text(alphabet="\x00\ud7ff\ue000\x7f")
)
json_ish = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12
)
emails = st.one_of(st.emails(), st.text(), json_ish)
dates = st.one_of(
    st.none(),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.timezone(dt.timedelta(hours=-3)))),
    st.text(),
    st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5+05:30", "2024-13-01", "2024-01-01", "nope"]),
)


def drain(dispatches) -> None:
    tasks.flush_events.run()
    while dispatches.pending:
        dispatches.run_all()
        tasks.flush_events.run()


def test_track_accepts_or_names_the_problem(buffer, fake, dispatches):
    """track() with arbitrary values either queues a valid event or raises InvalidEvent; the queued
    ones all reach Bento, which refuses none of them."""
    accepted = []

    @FUZZ
    @given(type=st.one_of(st.text(), json_ish), email=emails, fields=json_ish, details=json_ish, date=dates)
    def examples(type, email, fields, details, date):
        try:
            track(type, email, fields=fields, details=details, date=date)
        except InvalidEvent as exc:
            assert exc.errors and str(exc)
        else:
            accepted.append(email)

    examples()
    drain(dispatches)
    assert accepted, "no example was valid: the strategies test nothing"
    assert fake.count_status(400) == 0
    assert len(fake.events) == len(accepted) and buffer.status()["dead"] == 0


def test_raw_entries_from_other_producers_never_crash_the_flush(buffer, fake, dispatches):
    """Arbitrary bytes and JSON pushed straight onto the queue: the flush survives, invalid entries
    are dead-lettered with a reason, valid ones are delivered, Bento never sees a bad event."""
    pushed: list[bytes] = []
    near_events = st.fixed_dictionaries(
        {"type": st.one_of(st.text(min_size=1), json_ish), "email": emails},
        optional={"fields": json_ish, "details": json_ish, "date": dates.map(str), "extra": json_ish},
    )
    objects = st.one_of(near_events, st.dictionaries(st.text(), json_ish))

    @FUZZ
    @given(entry=st.one_of(st.binary(max_size=200), objects.map(lambda o: json.dumps(o).encode())))
    def examples(entry):
        buffer.push(entry)
        pushed.append(entry)

    examples()
    drain(dispatches)
    assert fake.count_status(400) == 0
    dead = buffer.dead_letters()
    assert dead and fake.events, "the strategies must produce both valid and invalid entries"
    assert all(letter.reason for letter in dead)
    assert len(fake.events) + len(dead) == len(pushed)
    assert buffer.status()["queued"] == buffer.status()["in_flight"] == 0


def test_send_event_delay_accepts_or_names_the_problem(buffer, celery_app):
    """send_event.delay() with arbitrary values raises InvalidEvent in the caller or sends a message."""
    sent = 0

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(type=st.one_of(st.text(), json_ish), email=emails, details=json_ish, date=dates)
    def examples(type, email, details, date):
        nonlocal sent
        try:
            send_event.delay(type, email, details=details, date=date)
        except InvalidEvent:
            return
        sent += 1

    examples()
    assert sent
    broker = celery_app.connection_for_write().default_channel.client
    assert broker.llen("celery") == sent


def test_ten_megabyte_events_are_refused_and_dead_lettered(buffer, fake, dispatches):
    """A 10 MB event raises InvalidEvent in track(); pushed raw, it is dead-lettered, never sent."""
    huge = "x" * 10 * 1024 * 1024
    with pytest.raises(InvalidEvent, match="BENTO_MAX_EVENT_BYTES"):
        track("t", "a@example.com", details={"blob": huge})
    buffer.push(json.dumps({"type": "t", "email": "a@example.com", "details": {"blob": huge}}).encode())
    track("t", "b@example.com")
    drain(dispatches)
    assert [e["email"] for e in fake.events] == ["b@example.com"]
    [letter] = buffer.dead_letters()
    assert "BENTO_MAX_EVENT_BYTES" in letter.reason


def test_deep_nesting_is_refused_not_a_crash(buffer, fake, dispatches):
    """details nested deeper than json can go: InvalidEvent from track(), a dead letter when pushed raw."""
    # 30,000 levels: Python 3.13's json handles about 10,000 (3.10 to 3.12 about 1,000, which is why this
    # was once 5,000), and as lists the raw entry stays under BENTO_MAX_EVENT_BYTES, so depth is what is refused.
    depth = 30_000
    deep: list = []
    node = deep
    for _ in range(depth):
        node.append([])
        node = node[0]
    with pytest.raises(InvalidEvent, match="details"):
        track("t", "a@example.com", details={"a": deep})
    raw = b'{"type":"t","email":"a@example.com","details":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    buffer.push(raw)
    drain(dispatches)
    assert fake.events == []
    [letter] = buffer.dead_letters()
    assert "recursion" in letter.reason, letter.reason
