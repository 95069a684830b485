"""The fault schedule: a pure function of the seed, the campaign's length and its number of workers.

The same seed gives the same list of faults, at the same offsets, with the same parameters (what each
fault then hits depends on timing: which batch a pool child is posting when it dies is not seeded).
Every kind is planned at least once; more faults follow as a Poisson process.

The schedule stays inside what the design promises to ride out, so that a failed check is a bug and not
a fault the README says is fatal:

- Lost answers (hang-ups, trickles cut at the deadline) come at most two at a time and ``LOST_SPACING``
  apart: a batch would need ``BENTO_MAX_UNANSWERED`` (3) lost answers with nothing else accepted meanwhile
  to be held, and a held batch that is the last one when the campaign heals waits for an acceptance that
  never comes, then is dead-lettered as ``unanswered`` (the README's quiet site in an outage of hangs).
- Redis stays down at most ``MAX_REDIS_DOWN`` seconds, below the lease margin, so every attempt can record
  its outcome before its lease ends (a longer outage makes a lease run out under a live worker, which the
  README counts as a worker death).
- A poison event goes in no later than ``POISON_MARGIN`` before healing: isolating an event Bento answers
  500 for takes evidence, i.e. other batches accepted, and the producers stop at healing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: Relative weight of each kind among the faults after the first of each.
WEIGHTS: dict[str, float] = {
    "pool_child_kill": 2.0,
    "kill_while_posting": 1.0,
    "worker_kill": 1.5,
    "beat_kill": 1.0,
    "second_beat": 0.7,
    "redis_kill": 1.0,
    "duplicate_messages": 1.5,
    "bento_5xx": 1.5,
    "bento_429": 1.0,
    "bento_slow": 1.0,
    "bento_trickle": 1.0,
    "bento_hang_up": 1.0,
    "bento_down": 0.7,
    "poison_event": 0.5,
    "invalid_entries": 0.7,
}
KINDS = tuple(WEIGHTS)
#: Mean seconds between two faults.
MEAN_GAP = 5.0
#: Seconds after the start before the first fault (the stack settles, producers get going).
START = 5.0
#: No fault starts in the last seconds before healing.
END_MARGIN = 3.0
LOST_SPACING = 10.0
MAX_REDIS_DOWN = 2.0
POISON_MARGIN = 40.0
#: Trickles last this many POST deadlines: far past it (always cut off), or well within it (never cut off),
#: so that whether the worker got the answer never hangs on a race with its deadline.
TRICKLE_PAST, TRICKLE_WITHIN = 3.0, 0.25


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the campaign started
    kind: str
    params: dict[str, float | int | str] = field(default_factory=dict)

    def loses_answers(self) -> bool:
        """Whether Bento records batches whose answer the worker never gets."""
        return self.kind == "bento_hang_up" or (self.kind == "bento_trickle" and self.params["mode"] == "past")


def plan(seed: int, seconds: float, workers: int) -> list[Fault]:
    """The faults of a campaign of ``seconds`` with ``workers`` worker processes, in time order."""
    rng = random.Random(seed)
    last = max(START, seconds - END_MARGIN)
    poison_last = max(START, seconds - POISON_MARGIN)
    drafts = [(rng.uniform(START, poison_last if kind == "poison_event" else last), kind) for kind in KINDS]
    at = START
    while True:
        at += rng.expovariate(1 / MEAN_GAP)
        if at >= last:
            break
        kind = rng.choices(KINDS, weights=[WEIGHTS[k] for k in KINDS])[0]
        if kind != "poison_event" or at <= poison_last:
            drafts.append((at, kind))
    faults: list[Fault] = []
    lost_at = -LOST_SPACING
    for at, kind in sorted(drafts):
        fault = Fault(round(at, 3), kind, _params(kind, rng, workers))
        if fault.loses_answers():
            at = max(at, lost_at + LOST_SPACING)  # later, to keep its distance from the previous one
            if at > last:
                continue
            lost_at = at
            fault = Fault(round(at, 3), kind, fault.params)
        faults.append(fault)
    return sorted(faults, key=lambda fault: fault.at)


def _params(kind: str, rng: random.Random, workers: int) -> dict[str, float | int | str]:
    if kind == "pool_child_kill":
        return {"worker": rng.randrange(workers), "child": rng.randrange(100)}
    if kind == "kill_while_posting":
        return {}
    if kind == "worker_kill":
        return {"worker": rng.randrange(workers), "restart_after": round(rng.uniform(0.5, 4), 2)}
    if kind == "beat_kill":
        return {"restart_after": round(rng.uniform(1, 6), 2)}
    if kind == "second_beat":
        return {"seconds": round(rng.uniform(5, 20), 2)}
    if kind == "redis_kill":
        return {"down_for": round(rng.uniform(0.2, MAX_REDIS_DOWN), 2)}
    if kind == "duplicate_messages":
        return {"batches": rng.randint(1, 4), "copies": rng.randint(1, 3), "late": rng.choice([0.0, 2.0])}
    if kind == "bento_5xx":
        status = rng.choice([500, 502, 503])
        if rng.random() < 0.5:
            return {"status": status, "mode": "burst", "times": rng.randint(1, 4)}
        return {"status": status, "mode": "window", "seconds": round(rng.uniform(1, 6), 2)}
    if kind == "bento_429":
        return {"times": rng.randint(1, 2), "retry_after": rng.randint(1, 3)}
    if kind == "bento_slow":
        return {"delay": round(rng.uniform(0.2, 1.0), 2), "seconds": round(rng.uniform(3, 10), 2)}
    if kind == "bento_trickle":
        headers = rng.choice(["yes", "no"])
        if rng.random() < 0.6:
            return {"mode": "past", "times": rng.randint(1, 2), "headers": headers}
        return {"mode": "within", "times": rng.randint(1, 3), "headers": headers}
    if kind == "bento_hang_up":
        return {"times": rng.randint(1, 2)}
    if kind == "bento_down":
        return {"seconds": round(rng.uniform(1, 4), 2)}
    if kind == "poison_event":
        return {"via": rng.choice(["track", "delay"])}
    if kind == "invalid_entries":
        return {"count": rng.randint(1, 3), "shape": rng.randrange(5)}
    raise ValueError(f"unknown fault kind {kind!r}")
