"""The chaos campaign (``chaos/``): its seeded plan and its checker against small hand-made cases, so that the
checker is shown to fail where it must, and one short seeded campaign against the real stack."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bento_tasks.events import split_valid
from bento_tasks.testing.rules import InvalidBody, check_event
from chaos.check import BROKER_WINDOW, Kill, Observed, Post, Verdict, check
from chaos.faults import invalid_entry
from chaos.plan import END_MARGIN, KINDS, LOST_SPACING, MAX_REDIS_DOWN, POISON_MARGIN, START, plan

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_000_000.0


def test_the_same_seed_plans_the_same_faults() -> None:
    """plan() is a pure function of the seed: the same seed, the same faults at the same times; another seed differs."""
    assert plan(7, 300, 2) == plan(7, 300, 2)
    assert plan(7, 300, 2) != plan(8, 300, 2)


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_covers_every_kind_within_the_envelope(seed: int) -> None:
    """Every kind is planned; lost answers keep their distance, poison comes early enough, Redis comes back in time."""
    seconds = 120
    faults = plan(seed, seconds, 2)
    assert {fault.kind for fault in faults} == set(KINDS)
    assert [fault.at for fault in faults] == sorted(fault.at for fault in faults)
    assert all(START <= fault.at <= seconds - END_MARGIN for fault in faults)
    lost = [fault.at for fault in faults if fault.loses_answers()]
    assert all(later - earlier >= LOST_SPACING - 0.001 for earlier, later in itertools.pairwise(lost))
    assert all(fault.at <= seconds - POISON_MARGIN for fault in faults if fault.kind == "poison_event")
    assert all(fault.params["down_for"] <= MAX_REDIS_DOWN for fault in faults if fault.kind == "redis_kill")


@pytest.mark.parametrize("shape", range(5))
def test_the_invalid_entries_are_invalid_for_the_post_task_and_for_bento(shape: int) -> None:
    """Each shape of "foreign producer" entry is refused by post_batch's validation and by Bento's rules."""
    raw = invalid_entry("invalid1@chaos.test", shape)
    valid, rejected = split_valid([raw], 65536)
    assert valid == [] and rejected[0][0] == raw
    try:
        event = json.loads(raw)
    except ValueError:
        return  # not JSON: Bento's body parser refuses it before any event rule
    with pytest.raises(InvalidBody):
        check_event(0, event)


def post(*emails: str, answer: str = "sent", port: int = 5000, at: float = T0) -> Post:
    return Post(tuple(emails), answer, port, at)


def observed(**changes: object) -> Observed:
    """A campaign that went well: three events sent, each delivered once; a poison event dead-lettered."""
    base = Observed(
        sent={
            "t1@chaos.test": "track",
            "d1@chaos.test": "delay",
            "t2@chaos.test": "track",
            "poison1@chaos.test": "track",
        },
        unconfirmed=frozenset(),
        posts=[post("t1@chaos.test", "d1@chaos.test"), post("t2@chaos.test", at=T0 + 1)],
        refused_bodies=0,
        dead=[("poison1@chaos.test", "Bento failed this event 3 times while accepting other batches")],
        held=frozenset(),
        stuck=frozenset(),
        delivered_stat=3,
        kills=[],
        bound=7,
        drain_seconds=4.0,
        drain_limit=60.0,
        sent_at={"t1@chaos.test": T0 - 1, "d1@chaos.test": T0 - 1, "t2@chaos.test": T0, "poison1@chaos.test": T0},
        task_ids={"d1@chaos.test": "task-d1"},
        received=frozenset({"task-d1"}),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def failed(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.ok]


def test_a_campaign_that_went_well_passes_every_check() -> None:
    """The baseline the other cases change one thing in: every check passes."""
    verdict = check(observed())
    assert failed(verdict) == [] and verdict.ok
    assert verdict.delivered == 3 and verdict.duplicates.extra == 0


def test_a_copy_after_a_lost_answer_is_explained() -> None:
    """Bento recorded a batch and hung up (or the client left): its re-send is a legitimate duplicate."""
    posts = [post("t1@chaos.test", "d1@chaos.test", answer="hung_up"), *observed().posts]
    verdict = check(observed(posts=posts))
    assert verdict.ok, failed(verdict)
    assert verdict.duplicates.extra == 2 and verdict.duplicates.explained == {"lost answer": 2}
    # Two copies, both without an answer (then cut into pieces, say): one of them is the copy, not two.
    only_lost = [observed().posts[0], *(post("t2@chaos.test", answer="hung_up", at=T0 + i) for i in (1, 2))]
    assert check(observed(posts=only_lost)).duplicates.explained == {"lost answer": 1}


def test_two_answered_posts_of_one_event_fail_the_duplicate_check() -> None:
    """The same event in two POSTs that were both answered, with no kill: a copy nobody can explain."""
    posts = [*observed().posts, post("t2@chaos.test", at=T0 + 5)]
    verdict = check(observed(posts=posts, delivered_stat=3))
    assert failed(verdict) == ["every duplicate from a lost answer or a worker death"]
    assert list(verdict.duplicates.unexplained) == ["t2@chaos.test"]


def test_a_copy_after_its_worker_was_killed_before_acknowledging_is_explained() -> None:
    """Answered, then the posting process was SIGKILLed while Redis still showed the batch owned: explained."""
    posts = [*observed().posts[:1], post("t2@chaos.test", port=6001, at=T0 + 1), post("t2@chaos.test", at=T0 + 9)]
    kill = Kill(T0 + 1.2, frozenset({6001, 6002}), (frozenset({"t2@chaos.test", "t3@chaos.test"}),))
    verdict = check(observed(posts=posts, kills=[kill]))
    assert verdict.ok, failed(verdict)
    assert verdict.duplicates.explained == {"worker death": 1}


@pytest.mark.parametrize(
    "kill",
    [
        Kill(T0 + 1.2, frozenset({6001}), (frozenset({"t9@chaos.test"}),)),  # the batch was acknowledged already
        Kill(T0 + 1.2, frozenset({7777}), (frozenset({"t2@chaos.test"}),)),  # another process was killed
        Kill(T0 + 0.5, frozenset({6001}), (frozenset({"t2@chaos.test"}),)),  # killed before it posted
        Kill(T0 + 1.2, frozenset({6001}), None),  # Redis could not be read: no evidence
    ],
    ids=["acknowledged", "another-process", "before-the-post", "no-snapshot"],
)
def test_a_kill_that_does_not_show_an_unacknowledged_post_explains_nothing(kill: Kill) -> None:
    """A kill explains a copy only if it hit the process that posted, after the POST, with the batch still owned."""
    posts = [*observed().posts[:1], post("t2@chaos.test", port=6001, at=T0 + 1), post("t2@chaos.test", at=T0 + 9)]
    verdict = check(observed(posts=posts, kills=[kill]))
    assert failed(verdict) == ["every duplicate from a lost answer or a worker death"]


def test_copies_beyond_the_bound_fail_even_when_each_is_explained() -> None:
    """Eight copies of one event, seven of them after lost answers, break a bound of 7."""
    lost = [post("t2@chaos.test", answer="client_gone", at=T0 + i) for i in range(7)]
    verdict = check(observed(posts=[*observed().posts, *lost]))
    assert failed(verdict) == ["copies of one event within the bound"]


def test_an_event_found_nowhere_is_lost_unless_the_broker_holds_its_message() -> None:
    """A sent event missing from Bento, the buffer and the dead letters fails lost = 0; one whose message the broker
    still holds (a killed worker's unacked message) is not lost."""
    posts = observed().posts[1:]
    assert "lost = 0" in failed(check(observed(posts=posts, delivered_stat=1)))
    held = check(observed(posts=posts, delivered_stat=1, held=frozenset({"t1@chaos.test", "d1@chaos.test"})))
    assert held.ok, failed(held)


@pytest.mark.parametrize(
    ("received", "takedown", "lost_by_bento"),
    [
        (frozenset(), (T0, T0 + 0.05), False),  # never received, a worker SIGKILLed just after it was sent
        (frozenset(), (T0 - 1.01, T0 + 0.01), False),  # sent while the killed worker was being torn down
        (frozenset({"task-d1"}), (T0, T0 + 0.05), True),  # a worker received it: bento-tasks had it
        (frozenset(), (T0 + BROKER_WINDOW, T0 + BROKER_WINDOW + 0.1), True),  # no takedown near: unexplained
        (frozenset(), (T0 - 2, T0 - 1.9), True),  # the killed worker was gone before it was sent
    ],
    ids=["taken-by-a-killed-worker", "taken-while-dying", "received", "no-takedown-near", "takedown-before"],
)
def test_a_send_event_message_lost_in_the_broker_is_told_apart(
    received: frozenset[str], takedown: tuple[float, float], lost_by_bento: bool
) -> None:
    """An event whose message no worker received, sent shortly before a worker or Redis was SIGKILLed and before
    it was gone, is the broker's loss (shown apart); any other missing send_event event fails lost = 0."""
    posts = [post("t1@chaos.test"), *observed().posts[1:]]
    verdict = check(observed(posts=posts, delivered_stat=2, received=received, takedowns=[takedown]))
    assert ("lost = 0" in failed(verdict)) is lost_by_bento
    assert verdict.lost_by_broker == (frozenset() if lost_by_bento else {"d1@chaos.test"})


def test_poison_must_end_in_the_dead_letters_and_never_at_bento() -> None:
    """A poison event missing from the dead letters, or accepted by Bento, fails the poison check."""
    assert failed(check(observed(dead=[]))) == ["poison events dead-lettered, never accepted"]
    accepted = [*observed().posts, post("poison1@chaos.test", at=T0 + 2)]
    assert "poison events dead-lettered, never accepted" in failed(check(observed(posts=accepted, delivered_stat=4)))


def test_a_healthy_event_in_the_dead_letters_fails() -> None:
    """A healthy event dead-lettered (here: as unanswered) fails, though it is not lost."""
    dead = [*observed().dead, ("t2@chaos.test", "unanswered: Bento did not answer 3 times")]
    verdict = check(observed(dead=dead, posts=observed().posts[:1], delivered_stat=2))
    assert failed(verdict) == ["no healthy event in the dead letters"]


def test_invalid_or_unknown_events_reaching_bento_fail() -> None:
    """A 400 from Bento's body rules, an invalid entry recorded, or an event nobody sent: all fail."""
    name = "invalid events reaching Bento = 0"
    assert failed(check(observed(refused_bodies=1))) == [name]
    invalid = [*observed().posts, post("invalid1@chaos.test", at=T0 + 3)]
    assert name in failed(check(observed(posts=invalid, delivered_stat=4)))
    unknown = [*observed().posts, post("stranger@example.com", at=T0 + 3)]
    assert name in failed(check(observed(posts=unknown, delivered_stat=4)))


def test_delivered_must_count_each_accepted_event_once() -> None:
    """`delivered` in status above (counted twice) or below the distinct events at Bento fails."""
    for stat in (2, 4):
        assert failed(check(observed(delivered_stat=stat))) == [
            "status `delivered` counts each event Bento accepted once"
        ]


def test_a_drain_too_slow_or_missing_fails() -> None:
    """Not drained within the stated time after healing (or not at all) fails."""
    name = "queue drained after healing"
    assert failed(check(observed(drain_seconds=61.0))) == [name]
    assert failed(check(observed(drain_seconds=None, stuck=frozenset({"t9@chaos.test"})))) == [name]


def test_a_process_exiting_by_itself_fails() -> None:
    """A worker, beat or Redis that exited without a fault asking for it fails the run."""
    verdict = check(observed(unexpected_exits=["worker w0-1 exited (1): Unrecoverable error"]))
    assert failed(verdict) == ["no process exited by itself"]


@pytest.mark.slow
def test_a_short_seeded_campaign_passes() -> None:
    """`python -m chaos` for 45 s of faults against real workers, beat, Redis (AOF) and the fake: every check passes."""
    result = subprocess.run(
        [sys.executable, "-m", "chaos", "--seed", "20261", "--minutes", "0.75"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "result: PASS (seed 20261" in result.stdout
