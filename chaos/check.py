"""The checker: pure functions from what the campaign observed (the fake's records, Redis, the producers'
ledger, the kill evidence) to pass/fail checks. No I/O, so the unit tests can feed it small hand-made cases.

Events are named by their email (unique per event): ``t<n>@``/``d<n>@`` healthy events sent by ``track()``
and ``send_event.delay()``, ``poison<n>@`` events Bento refuses, ``invalid<n>@`` raw entries that are not
valid Bento events (pushed onto the queue by a "foreign producer").

Why a duplicate is legitimate, exactly. The README allows a copy only from a POST Bento recorded whose
outcome the worker never learnt. A copy is therefore *explained* by the POST that carried it or by an
earlier one, and for every event at most one of the POSTs carrying it may be an *ordinary* one (answered,
and acted on): every other POST carrying it must be one of

- **a lost answer**: the fake recorded the batch but its answer did not reach a connected client
  (``RecordedRequest.answer`` is ``hung_up`` or ``client_gone``: a hang-up, a trickle or delay cut by
  the client's deadline, a client that closed with the answer unread); or
- **a worker death**: the answer was sent, but the process that sent the POST was SIGKILLed by the
  campaign afterwards (the POST's client port was one of the killed processes' connections to the fake at
  the kill) and, read from Redis right after the kill, the batch holding the POST's events was still
  owned by an attempt, i.e. not yet acknowledged. A dead process cannot acknowledge, and no other attempt
  can while the dead one owns the batch, so that POST's outcome was never recorded.

Two ordinary POSTs of one event mean a copy nobody can explain (a batch recovered under a live worker,
an event queued twice, a fencing bug): the check fails and names them.

Where a lost event was lost. bento-tasks has an event once ``track()`` returned, or once a worker received
its ``send_event`` message (from then on kombu keeps the message in its ``unacked`` hash until the task
acknowledges it, and restores it if the worker dies). Before that the message is the broker's alone, and
kombu's Redis transport takes a message with BRPOP and records it as unacknowledged in a second command: a
worker SIGKILLed between the two, or a Redis crash that loses the BRPOP's reply, loses the message (and a
killed worker's connection lingers until the kernel has torn the process down, still taking messages). So
an event found nowhere whose message no worker ever received, sent at most ``BROKER_WINDOW`` seconds before
a worker's main process or Redis was SIGKILLed and no later than it was gone, is counted as *lost by the
broker* (the README's "as durable as your broker"), shown apart; every other missing event fails
``lost = 0``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LOST_ANSWER, WORKER_DEATH = "lost answer", "worker death"
#: A message waits in the broker's queue for milliseconds while workers are idle: one lost by the broker was
#: taken by a worker (or Redis) SIGKILLed this soon after it was published.
BROKER_WINDOW = 5.0


@dataclass(frozen=True)
class Post:
    """A request Bento recorded (accepted) events from."""

    emails: tuple[str, ...]
    answer: str  # RecordedRequest.answer: "sent", "hung_up", "client_gone"
    port: int  # the client's port
    at: float  # when the fake received it (time.time())


@dataclass(frozen=True)
class Kill:
    """A SIGKILL of worker processes, and what Redis said right after it."""

    at: float  # time.time() just before the signal
    ports: frozenset[int]  # local ports of the killed processes' connections to the fake
    owned: tuple[frozenset[str], ...] | None  # events of each batch an attempt owned; None: Redis unreadable


@dataclass(frozen=True)
class Observed:
    """Everything the checks look at, gathered once the queue drained (or the drain limit passed)."""

    sent: Mapping[str, str]  # event -> how it was sent ("track", "delay"), confirmed: the call returned
    unconfirmed: frozenset[str]  # events whose call raised: they may or may not be queued
    posts: Sequence[Post]
    refused_bodies: int  # requests the fake answered 400 (a body that breaks Bento's rules)
    dead: Sequence[tuple[str, str]]  # (event, reason) of each dead letter
    held: frozenset[str]  # events in send_event messages the broker holds (see the README's chaos section)
    stuck: frozenset[str]  # events still in the buffer (queue or batches)
    delivered_stat: int  # `delivered` in status
    kills: Sequence[Kill]
    bound: int  # policy.copy_bound of the campaign's settings
    drain_seconds: float | None  # None: not drained within the limit
    drain_limit: float
    unexpected_exits: Sequence[str] = ()
    sent_at: Mapping[str, float] = field(default_factory=dict)  # event -> when its call began
    task_ids: Mapping[str, str] = field(default_factory=dict)  # event -> id of its send_event message
    received: frozenset[str] = frozenset()  # send_event message ids some worker logged as received
    takedowns: Sequence[tuple[float, float]] = ()  # a worker's main process or Redis: SIGKILL sent, then gone


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Duplicates:
    copies: Counter[str]  # event -> copies at Bento
    explained: Counter[str]  # why extra POSTs happened: LOST_ANSWER, WORKER_DEATH (counted per extra copy)
    unexplained: dict[str, list[Post]] = field(default_factory=dict)  # event -> its ordinary POSTs, if > 1

    @property
    def extra(self) -> int:
        return sum(n - 1 for n in self.copies.values())


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    duplicates: Duplicates
    delivered: int  # distinct events at Bento
    dead: Counter[str]  # dead letters by kind: poison, invalid, healthy
    lost_by_broker: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def kind_of(email: str) -> str:
    if email.startswith("poison"):
        return "poison"
    if email.startswith("invalid"):
        return "invalid"
    return "healthy"


def why_extra(post: Post, kills: Iterable[Kill]) -> str | None:
    """Why this POST may have left a copy the worker never recorded; None for an ordinary POST."""
    if post.answer in ("hung_up", "client_gone"):
        return LOST_ANSWER
    events = set(post.emails)
    for kill in kills:
        if post.port in kill.ports and post.at <= kill.at and kill.owned is not None:
            if any(events <= batch for batch in kill.owned):
                return WORKER_DEATH
    return None


def duplicates(posts: Sequence[Post], kills: Sequence[Kill]) -> Duplicates:
    copies: Counter[str] = Counter()
    carrying: dict[str, list[Post]] = defaultdict(list)
    for post in posts:
        for email in post.emails:
            copies[email] += 1
            carrying[email].append(post)
    explained: Counter[str] = Counter()
    unexplained: dict[str, list[Post]] = {}
    reasons: dict[int, str | None] = {}
    for email, its_posts in carrying.items():
        if len(its_posts) < 2:
            continue
        ordinary = []
        for post in its_posts:
            if id(post) not in reasons:
                reasons[id(post)] = why_extra(post, kills)
            reason = reasons[id(post)]
            if reason is None:
                ordinary.append(post)
            else:
                explained[reason] += 1
        if len(ordinary) > 1:
            unexplained[email] = ordinary
        # The one POST that was acted on (ordinary, or the last lost one if none was) is not an extra copy.
        elif not ordinary:
            explained[reasons[id(its_posts[-1])] or LOST_ANSWER] -= 1
    return Duplicates(copies, +explained, unexplained)


def check(observed: Observed) -> Verdict:
    dups = duplicates(observed.posts, observed.kills)
    at_bento = set(dups.copies)
    healthy = set(observed.sent) | set(observed.unconfirmed)
    healthy = {email for email in healthy if kind_of(email) == "healthy"}
    poison = {email for email in (*observed.sent, *observed.unconfirmed) if kind_of(email) == "poison"}
    confirmed_healthy = {email for email, _ in observed.sent.items() if kind_of(email) == "healthy"}
    confirmed_poison = {email for email in observed.sent if kind_of(email) == "poison"}
    dead_by_kind: Counter[str] = Counter(kind_of(email) for email, _ in observed.dead)
    dead_events = {email for email, _ in observed.dead}
    checks: list[Check] = []

    missing = confirmed_healthy - at_bento - observed.held - observed.stuck - dead_events
    by_broker = frozenset(email for email in missing if lost_by_broker(email, observed))
    lost = missing - by_broker
    checks.append(
        Check(
            "lost = 0",
            not lost,
            f"{len(lost)} event(s) sent and found nowhere (Bento, buffer, dead letters, broker)"
            + (f", e.g. {_few(lost)}" if lost else "")
            + (
                f"; apart from {len(by_broker)} send_event message(s) lost by the broker before any worker "
                f"received them ({_few(by_broker)})"
                if by_broker
                else ""
            ),
        )
    )
    foreign = at_bento - healthy - poison
    invalid_at_bento = {email for email in at_bento if kind_of(email) == "invalid"}
    checks.append(
        Check(
            "invalid events reaching Bento = 0",
            observed.refused_bodies == 0 and not invalid_at_bento and not foreign,
            f"{observed.refused_bodies} POST(s) refused by Bento's body rules (400), {len(invalid_at_bento)} invalid "
            f"and {len(foreign - invalid_at_bento)} unknown event(s) recorded",
        )
    )
    detail = f"{dups.extra} extra copies; explained: " + (
        ", ".join(f"{reason} {n}" for reason, n in sorted(dups.explained.items())) or "none needed"
    )
    if dups.unexplained:
        email, its_posts = next(iter(dups.unexplained.items()))
        detail += f"; {len(dups.unexplained)} event(s) with unexplained copies, e.g. {email}: " + "; ".join(
            f"POST at {post.at:.3f} port {post.port} answer {post.answer} ({len(post.emails)} events)"
            for post in its_posts
        )
    checks.append(Check("every duplicate from a lost answer or a worker death", not dups.unexplained, detail))
    most = max(dups.copies.values(), default=0)
    over = [email for email, n in dups.copies.items() if n > observed.bound]
    checks.append(
        Check(
            "copies of one event within the bound",
            not over,
            f"most copies of one event {most}, bound {observed.bound}" + (f"; over it: {_few(over)}" if over else ""),
        )
    )
    poison_missing = confirmed_poison - dead_events
    poison_at_bento = poison & at_bento
    healthy_dead = healthy & dead_events
    checks.append(
        Check(
            "poison events dead-lettered, never accepted",
            not poison_missing and not poison_at_bento,
            f"{len(confirmed_poison & dead_events)} of {len(confirmed_poison)} in the dead letters"
            + (f"; missing {_few(poison_missing)}" if poison_missing else "")
            + (f"; accepted by Bento {_few(poison_at_bento)}" if poison_at_bento else ""),
        )
    )
    checks.append(
        Check(
            "no healthy event in the dead letters",
            not healthy_dead,
            f"{len(healthy_dead)} healthy event(s) dead-lettered"
            + (f", e.g. {_few(healthy_dead)}: {_reason(observed.dead, healthy_dead)}" if healthy_dead else ""),
        )
    )
    distinct = len(at_bento)
    checks.append(
        Check(
            "status `delivered` counts each event Bento accepted once",
            observed.delivered_stat == distinct,
            f"delivered {observed.delivered_stat:,}, distinct events at Bento {distinct:,}",
        )
    )
    drained = observed.drain_seconds is not None and observed.drain_seconds <= observed.drain_limit
    checks.append(
        Check(
            "queue drained after healing",
            drained,
            (
                f"in {observed.drain_seconds:.1f} s (limit {observed.drain_limit:g} s)"
                if observed.drain_seconds is not None
                else f"not within {observed.drain_limit:g} s: {len(observed.stuck)} event(s) still in the buffer"
            ),
        )
    )
    checks.append(
        Check(
            "no process exited by itself",
            not observed.unexpected_exits,
            "; ".join(observed.unexpected_exits) or "every exit was a fault the campaign injected",
        )
    )
    return Verdict(checks, dups, distinct, dead_by_kind, by_broker)


def lost_by_broker(email: str, observed: Observed) -> bool:
    """Whether a missing event's send_event message was lost in the broker, before bento-tasks had it."""
    task_id = observed.task_ids.get(email)
    if task_id is None or task_id in observed.received:
        return False
    sent_at = observed.sent_at[email]
    return any(killed - BROKER_WINDOW <= sent_at <= gone for killed, gone in observed.takedowns)


def _few(emails: Iterable[str], n: int = 3) -> str:
    shown = sorted(emails)
    return ", ".join(shown[:n]) + (f" and {len(shown) - n} more" if len(shown) > n else "")


def _reason(dead: Sequence[tuple[str, str]], emails: set[str]) -> str:
    return next(reason for email, reason in dead if email in emails)[:200]
