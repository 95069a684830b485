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
    SILENT_OUTAGE,
    Health,
    Kind,
    Record,
    after_death,
    backoff_delay,
    copy_bound,
    decide,
    decide_held,
    dispatch_room,
    horizon,
    outage_window,
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
    ("a lost answer waits long", lost, FRESH, OUTAGE, Kind.RETRY, {"unanswered": 1, "pause": 0}),
    (
        "a third lost answer in an outage holds the batch",
        lost,
        replace(FRESH, unanswered=2),
        OUTAGE,
        Kind.RETRY,
        {"unanswered": 1},
    ),
    (
        "a third lost answer, claimed before Bento last accepted, in an outage since: held, not cut",
        lost,
        replace(FRESH, unanswered=2, failed_at=NOW - 50),
        Health(now=NOW, accepted_at=NOW - 90),
        Kind.RETRY,
        {"unanswered": 1},
    ),
    (
        "the same for one event: held, not dead-lettered",
        lost,
        single(unanswered=2, failed_at=NOW - 50),
        Health(now=NOW, accepted_at=NOW - 90),
        Kind.RETRY,
        {"unanswered": 1},
    ),
    (
        "a lost answer past the outage window dead-letters",
        lost,
        replace(FRESH, unanswered=2, first_failure=NOW - 5100),
        OUTAGE,
        Kind.BURY,
        {"unanswered": 1},
    ),
    (
        "an event cut twice already is dead-lettered, not held",
        lost,
        single(unanswered=4, cuts=2),
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


def test_a_batch_at_the_copy_limit_in_an_outage_is_held_whole():
    """The lost answer reaching BENTO_MAX_UNANSWERED with nothing accepted keeps the batch whole and marks it held."""
    action = decide(lost, replace(FRESH, unanswered=2), OUTAGE, DEFAULTS)
    assert (action.record.held, action.record.unanswered, action.record.size) == (True, 3, 1000)
    assert action.delay >= DEFAULTS.retry_backoff_max / 2 and "held" in action.reason


@pytest.mark.parametrize(("silent", "pauses"), [(0, False), (SILENT_OUTAGE - 2, False), (SILENT_OUTAGE - 1, True)])
def test_a_run_of_lost_answers_pauses_every_worker(silent, pauses):
    """The SILENT_OUTAGE-th lost answer in a row, nothing accepted, pauses delivery as long as the batch waits."""
    action = decide(lost, FRESH, replace(OUTAGE, silent=silent), DEFAULTS, rng=random.Random(3))
    assert action.kind is Kind.RETRY
    assert action.pause == (action.delay if pauses else 0.0)
    assert ("Bento looks down" in action.reason) is pauses


HELD = replace(FRESH, unanswered=3, attempts=3, held=True, failed_at=NOW - 200, first_failure=NOW - 900)


@pytest.mark.parametrize(
    ("record", "health", "kind", "piece"),
    [
        (HELD, Health(now=NOW, accepted_at=NOW - 10), Kind.SPLIT, 32),
        (replace(HELD, size=1), Health(now=NOW, accepted_at=NOW - 10), Kind.SPLIT, 1),
        (HELD, Health(now=NOW, accepted_at=NOW - 300), Kind.RETRY, 0),
        (HELD, Health(now=NOW), Kind.RETRY, 0),
        (replace(HELD, first_failure=NOW - 5100), Health(now=NOW, accepted_at=NOW - 300), Kind.BURY, 0),
    ],
    ids=["accepted since: cut", "one event goes once more", "accepted before: held on", "none accepted", "window over"],
)
def test_decide_held_table(record, health, kind, piece):
    """A held batch is cut once Bento accepted another batch after its last send, held on within the outage window,
    and dead-lettered after it; it is never posted whole."""
    action = decide_held(record, health, DEFAULTS, rng=random.Random(0))
    assert action.kind is kind and action.piece == piece
    if kind is Kind.BURY:
        assert action.reason.startswith("unanswered: Bento did not answer 3 times")
    else:
        assert action.record.held is (kind is Kind.RETRY)


def test_the_outage_window_is_the_shortest_span_of_the_retries():
    """With the defaults 40 retries take at least 5,055 s (84 minutes); the window follows the settings."""
    assert outage_window(DEFAULTS) == pytest.approx(5055)
    assert outage_window(replace(DEFAULTS, max_retries=3)) == pytest.approx(1 + 2 + 4)


@pytest.mark.parametrize("accepted_at", [NOW - 500, NOW - 1], ids=["before the batch was claimed", "after"])
def test_an_outage_of_hangs_dead_letters_nothing_within_its_window(accepted_at):
    """Every POST unanswered, nothing accepted since Bento's last acceptance (before or after this batch was claimed),
    shortest jitter: for the outage window the batch is sent at most BENTO_MAX_UNANSWERED times, then held; it is
    neither cut nor dead-lettered until the window is over."""
    always_shortest = random.Random()
    always_shortest.random = lambda: 0.0
    record, now, sends, silent = FRESH, NOW, 0, 0
    while now < NOW + outage_window(DEFAULTS) - 1:
        health = Health(now=now, accepted_at=accepted_at, silent=silent)
        if record.held:
            action = decide_held(record, health, DEFAULTS, rng=always_shortest)
        else:
            action = decide(lost, record, health, DEFAULTS, rng=always_shortest)
            sends, silent = sends + 1, silent + 1
        assert action.kind is Kind.RETRY, (sends, now - NOW)
        record, now = action.record, now + action.delay
    assert sends == DEFAULTS.max_unanswered and record.held
    late = decide_held(record, Health(now=NOW + outage_window(DEFAULTS) + 1), DEFAULTS)
    assert late.kind is Kind.BURY


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
    # A held batch is never posted: it is only looked at, once Bento accepted others or after the window.
    held_moves = {
        "accepted since": lambda r: decide_held(r, Health(NOW, NOW + 1), settings),
        "window over": lambda r: decide_held(r, Health(NOW + 1e6, NOW - 1e6), settings),
    }

    @functools.cache
    def most_copies(size: int, unanswered: int, deaths: int, cuts: int = 0, held: bool = False) -> int:
        record = Record(size, NOW, unanswered=unanswered, deaths=deaths, cuts=cuts, first_failure=NOW, held=held)
        best = 0 if held else 1  # accepted now: one copy
        for name, move in (held_moves if held else moves).items():
            action = move(record)
            # a refusal is an answer (Bento has no copy), and a held batch is not sent
            copy = 0 if name == "refused" or held else 1
            if action.kind is Kind.BURY:
                best = max(best, copy)
            elif action.kind is Kind.SPLIT:
                inherited = action.record
                pieces = most_copies(action.piece, inherited.unanswered, inherited.deaths, inherited.cuts)
                best = max(best, copy + pieces)
            else:
                after = action.record
                best = max(best, copy + most_copies(size, after.unanswered, after.deaths, after.cuts, after.held))
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
