"""Delivery decisions as data: the table of what happens after each outcome, and the retry timing."""

from __future__ import annotations

import functools
import random
from dataclasses import replace

import pytest

from bento_tasks.client import Outcome, Verdict
from bento_tasks.conf import Settings
from bento_tasks.policy import (
    SAME_REFUSALS,
    Health,
    Kind,
    Record,
    after_death,
    backoff_delay,
    copy_bound,
    decide,
    dispatch_room,
    horizon,
    rate_interval,
)

DEFAULTS = Settings(site_uuid="s", publishable_key="p", secret_key="k")
NOW = 10_000.0
FRESH = Record(size=1000, created=NOW - 100)  # claimed 100 s ago, never failed
OUTAGE = Health(now=NOW, accepted_at=NOW - 500)  # Bento last accepted something before this batch was claimed
HEALTHY = Health(now=NOW, accepted_at=NOW - 1)  # ...and a moment ago

ok = Outcome(Verdict.DELIVERED, 200, accepted=1000)
e503 = Outcome(Verdict.RETRY, 503, detail="down")
refused_conn = Outcome(Verdict.RETRY, None, detail="ConnectionError: refused")
e503_retry_after = Outcome(Verdict.RETRY, 503, retry_after=120, detail="down")
lost = Outcome(Verdict.UNANSWERED, None, detail="ReadTimeout")
r429 = Outcome(Verdict.RATE_LIMITED, 429, retry_after=7)
r429_bare = Outcome(Verdict.RATE_LIMITED, 429)
r401 = Outcome(Verdict.CONFIG, 401, detail="bad key")
r422 = Outcome(Verdict.REFUSED, 422, detail='{"error": "events[0] was refused"}')
ANSWER_422 = f"422 {r422.detail}"


def single(**fields) -> Record:
    return replace(FRESH, size=1, **fields)


# (case, outcome, record, health, expected kind, expected fields of the action)
CASES = [
    ("2xx acknowledges", ok, FRESH, Health(), Kind.ACK, {}),
    ("429 pauses everyone for Retry-After", r429, FRESH, OUTAGE, Kind.RETRY, {"delay": 7, "pause": 7}),
    ("401 pauses, keeps the events", r401, FRESH, OUTAGE, Kind.RETRY, {"delay": 300, "pause": 300}),
    ("422 halves a batch", r422, FRESH, HEALTHY, Kind.SPLIT, {"piece": 500}),
    ("422 of one event dead-letters it", r422, single(), HEALTHY, Kind.BURY, {"refusal": ANSWER_422}),
    (
        "the same 422 for several events in a row pauses",
        r422,
        single(),
        Health(NOW, NOW - 50, ANSWER_422, SAME_REFUSALS),
        Kind.RETRY,
        {"pause": 300},
    ),
    (
        "a different refusal run does not pause",
        r422,
        single(),
        Health(NOW, NOW - 50, "400 other", SAME_REFUSALS),
        Kind.BURY,
        {},
    ),
    ("503 during an outage retries", e503, FRESH, OUTAGE, Kind.RETRY, {"pause": 0}),
    ("refused connection retries", refused_conn, FRESH, Health(now=NOW), Kind.RETRY, {}),
    ("503 with Retry-After pauses everyone", e503_retry_after, FRESH, OUTAGE, Kind.RETRY, {"pause": 120}),
    ("503 while others pass, twice before: halves", e503, replace(FRESH, isolated=2), HEALTHY, Kind.SPLIT, {}),
    (
        "one event failing while others pass, with fresh evidence: dead letters",
        e503,
        single(isolated=2, failed_at=NOW - 5),
        HEALTHY,
        Kind.BURY,
        {},
    ),
    (
        "one event whose evidence predates its last failure is kept",
        e503,
        single(isolated=2, failed_at=NOW - 0.5),
        HEALTHY,
        Kind.RETRY,
        {},
    ),
    ("retries exhausted dead-letter", e503, replace(FRESH, attempts=40), OUTAGE, Kind.BURY, {}),
    ("a lost answer waits long", lost, FRESH, OUTAGE, Kind.RETRY, {"unanswered": 1}),
    (
        "a third lost answer in an outage dead-letters",
        lost,
        replace(FRESH, unanswered=2),
        OUTAGE,
        Kind.BURY,
        {"unanswered": 1},
    ),
    (
        "a third lost answer while others pass cuts into sqrt pieces",
        lost,
        replace(FRESH, unanswered=2),
        HEALTHY,
        Kind.SPLIT,
        {"piece": 32},
    ),
    (
        "a small batch at the limit is cut into single events",
        lost,
        replace(FRESH, size=20, unanswered=3),
        HEALTHY,
        Kind.SPLIT,
        {"piece": 1},
    ),
    ("one event at the limit is dead-lettered", lost, single(unanswered=3), HEALTHY, Kind.BURY, {}),
]


@pytest.mark.parametrize(
    ("outcome", "record", "health", "kind", "fields"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_table(outcome, record, health, kind, fields):
    """Each outcome, attempt record and health leads to its action."""
    action = decide(outcome, record, health, DEFAULTS, rng=random.Random(0))
    assert action.kind is kind
    for name, value in fields.items():
        assert getattr(action, name) == value, name


def test_a_failed_attempt_is_recorded():
    """A failure counts an attempt, stamps its time and keeps the first failure; evidence counts only when real."""
    action = decide(e503, FRESH, OUTAGE, DEFAULTS)
    record = action.record
    assert (record.attempts, record.isolated, record.failed_at, record.first_failure) == (1, 0, NOW, NOW)
    assert (record.last_status, record.last_detail) == (503, "down")
    again = decide(e503, record, HEALTHY, DEFAULTS).record
    assert (again.attempts, again.isolated, again.first_failure) == (2, 1, NOW)
    assert decide(e503, again, OUTAGE, DEFAULTS).record.isolated == 0  # an outage moment resets the evidence


def test_a_lost_answer_waits_at_least_half_the_backoff_cap():
    """After an unanswered attempt the batch waits 150-300 s (defaults) before it is sent again."""
    for seed in range(20):
        action = decide(lost, FRESH, OUTAGE, DEFAULTS, rng=random.Random(seed))
        assert 150 <= action.delay <= 300


@pytest.mark.parametrize(
    ("record", "kind", "piece"),
    [
        (FRESH, Kind.RETRY, 0),
        (replace(FRESH, deaths=2), Kind.SPLIT, 32),
        (replace(FRESH, size=32, deaths=3), Kind.SPLIT, 1),
        (single(deaths=3), Kind.BURY, 0),
        (replace(FRESH, attempts=40), Kind.BURY, 0),
    ],
    ids=["first death re-sends", "third death cuts", "a piece dying again goes single", "a single dies", "exhausted"],
)
def test_after_death_table(record, kind, piece):
    """A worker death counts toward BENTO_MAX_WORKER_DEATHS; at the limit the batch is cut, a single buried."""
    action = after_death(record, NOW, DEFAULTS)
    assert action.kind is kind and action.piece == piece and action.deaths == 1
    assert action.record.deaths == record.deaths + 1 and action.record.attempts == record.attempts + 1
    if kind is Kind.RETRY:
        assert action.delay == 0


def test_a_one_hour_outage_splits_and_dead_letters_nothing():
    """Through an hour of 5xx or refused connections, with the shortest jitter every time, every batch is kept whole."""
    always_shortest = random.Random()
    always_shortest.random = lambda: 0.0
    for outcome in (e503, refused_conn):
        record, now = FRESH, NOW
        while now < NOW + 3600:
            action = decide(outcome, record, Health(now=now, accepted_at=NOW - 500), DEFAULTS, rng=always_shortest)
            assert action.kind is Kind.RETRY, (outcome, record.attempts)
            record, now = action.record, now + action.delay


def test_an_outage_never_dead_letters_a_single_event_claimed_before_it():
    """A single event claimed just before a neighbour's last accepted batch is split from nothing and never buried
    during an outage that began right after."""
    record, now = single(created=NOW - 1), NOW
    for _ in range(DEFAULTS.max_retries):
        action = decide(e503, record, Health(now=now, accepted_at=NOW - 0.5), DEFAULTS)
        assert action.kind is Kind.RETRY
        record, now = action.record, now + action.delay


def test_copies_of_one_event_never_exceed_the_bound():
    """Whatever mix of lost answers (with or without evidence), worker deaths and refusals an event meets on its way,
    Bento gets it at most copy_bound() times (BENTO_MAX_UNANSWERED + BENTO_MAX_WORKER_DEATHS + 1)."""
    settings = DEFAULTS
    moves = {
        "lost, others pass": lambda r: decide(lost, r, Health(NOW, NOW + 1), settings),
        "lost, outage": lambda r: decide(lost, r, Health(NOW, NOW - 1e6), settings),
        "worker died": lambda r: after_death(r, NOW, settings),
        "refused": lambda r: decide(r422, r, Health(NOW, NOW + 1), settings),
    }

    @functools.cache
    def most_copies(size: int, unanswered: int, deaths: int) -> int:
        record = Record(size=size, created=NOW, unanswered=unanswered, deaths=deaths)
        best = 1  # accepted now: one copy
        for name, move in moves.items():
            action = move(record)
            copy = 0 if name == "refused" else 1  # a refusal is an answer: Bento has no copy
            if action.kind is Kind.BURY:
                best = max(best, copy)
            elif action.kind is Kind.SPLIT:
                inherited = action.record
                best = max(best, copy + most_copies(action.piece, inherited.unanswered, inherited.deaths))
            else:
                best = max(best, copy + most_copies(size, action.record.unanswered, action.record.deaths))
        return best

    worst = most_copies(1000, 0, 0)
    assert worst == copy_bound(settings) == 7
    lost_only = {k: v for k, v in moves.items() if k != "worker died"}
    moves.clear()
    moves.update(lost_only)
    most_copies.cache_clear()
    assert most_copies(1000, 0, 0) == settings.max_unanswered + 2 == 5


def test_backoff_doubles_jitters_and_caps():
    """Each delay lies between half its step and the step; steps double up to the cap."""
    rng = random.Random(1)
    for attempt in range(60):
        step = min(DEFAULTS.retry_backoff_max, DEFAULTS.retry_backoff * 2**attempt)
        for _ in range(50):
            assert step / 2 <= backoff_delay(DEFAULTS, attempt, rng=rng) <= step


def test_backoff_never_undercuts_retry_after():
    """A Retry-After longer than the step wins."""
    assert backoff_delay(DEFAULTS, 0, retry_after=42) >= 42


def test_defaults_ride_out_a_one_hour_outage():
    """Even with the shortest jitter every time, the default retries span more than an hour."""
    shortest = sum(
        min(DEFAULTS.retry_backoff_max, DEFAULTS.retry_backoff * 2**a) / 2 for a in range(DEFAULTS.max_retries)
    )
    assert shortest > 3600


def test_countdowns_stay_far_below_the_visibility_timeout():
    """No wait is held as a Celery countdown longer than the flush interval (capped at 5 minutes)."""
    assert horizon(DEFAULTS) == DEFAULTS.flush_interval == 5
    assert horizon(replace(DEFAULTS, flush_interval=7200)) == 300 < 3600 / 10


def test_rate_interval_keeps_under_the_limit():
    """100 requests a minute means a little over 0.6 s between POSTs; 0 lifts the limit."""
    assert 0.6 < rate_interval(DEFAULTS) < 0.61
    assert rate_interval(Settings(site_uuid="s", publishable_key="p", secret_key="k", rate_limit=0)) == 0


def test_dispatch_room_follows_the_rate_share():
    """A 5 s tick at 100/min keeps two ticks of POSTs (18 batches) in flight."""
    assert dispatch_room(DEFAULTS, 0) == 18
    assert dispatch_room(DEFAULTS, 18) == 0
