"""The campaign's table: faults by kind, events, copies against the bound, dead letters, drain time, checks."""

from __future__ import annotations

from collections import Counter

from .campaign import Outcome
from .plan import KINDS

LABELS = {
    "pool_child_kill": "SIGKILL of a pool child",
    "kill_while_posting": "SIGKILL of the pool child posting",
    "worker_kill": "SIGKILL of a whole worker",
    "beat_kill": "SIGKILL of the beat",
    "second_beat": "a second beat",
    "redis_kill": "Redis SIGKILLed, restarted (AOF)",
    "duplicate_messages": "duplicated post_batch messages",
    "bento_5xx": "Bento 5xx (bursts, windows)",
    "bento_429": "Bento 429 with Retry-After",
    "bento_slow": "Bento slow to answer",
    "bento_trickle": "Bento trickling answers",
    "bento_hang_up": "Bento hangs up after recording",
    "bento_down": "Bento unreachable",
    "poison_event": "a poison event (Bento answers 500)",
    "invalid_entries": "invalid raw entries in the queue",
}


def table(outcome: Outcome) -> str:
    config, observed, verdict = outcome.config, outcome.observed, outcome.verdict
    injector, ledger, status = outcome.injector, outcome.ledger, outcome.status
    lines = [
        f"chaos campaign: seed {config.seed}, {outcome.seconds / 60:g} min of faults, "
        f"{config.workers} workers x {config.concurrency}, {config.rate:g} events/s",
        "",
        f"{'faults injected':<44}{'count':>6}",
    ]
    for kind in KINDS:
        skipped = f"  ({injector.skipped[kind]} skipped: nothing to hit then)" if injector.skipped[kind] else ""
        lines.append(f"  {LABELS[kind]:<42}{injector.injected[kind]:>6}{skipped}")
    lines.append(f"  {'total':<42}{sum(injector.injected.values()):>6}")
    lines += [f"    {what}: {n}" for what, n in sorted(injector.extras.items())]
    by_route = Counter(via for email, via in observed.sent.items() if not email.startswith("poison"))
    poison = sum(1 for email in observed.sent if email.startswith("poison"))
    dups = verdict.duplicates
    most = max(dups.copies.values(), default=0)
    explained = ", ".join(f"{why} {n:,}" for why, n in sorted(dups.explained.items())) or "none needed"
    if dups.unexplained:
        explained += f"; UNEXPLAINED: {len(dups.unexplained)} event(s)"
    rows = [
        (
            "events sent",
            f"{sum(by_route.values()):,} (track {by_route['track']:,}, "
            f"send_event.delay {by_route['delay']:,}) and {poison} poison",
        ),
        ("calls that raised (not sent)", _refusals(ledger.refusals)),
        ("delivered (distinct events at Bento)", f"{verdict.delivered:,}"),
        ("duplicates", f"{dups.extra:,} extra copies; most copies of one event {most} (bound {observed.bound})"),
        ("  from", explained),
        (
            "POSTs Bento recorded",
            f"{len(observed.posts):,}; status counts unanswered {status['unanswered']}, "
            f"worker_deaths {status['worker_deaths']}",
        ),
        ("dead letters", ", ".join(f"{kind} {verdict.dead[kind]}" for kind in ("poison", "invalid", "healthy"))),
        ("restored by the broker", _restored(outcome.restored)),
        ("held by the broker", _held(observed.held, outcome.held_messages, set(verdict.duplicates.copies))),
        ("lost by the broker", _broker_lost(len(verdict.lost_by_broker))),
        ("time to drain after healing", _drain(observed.drain_seconds, observed.drain_limit)),
    ]
    lines.append("")
    lines += [f"{name:<38}{value}" for name, value in rows]
    if injector.errors:
        lines.append(f"{'injector errors':<38}{len(injector.errors)}, e.g. {injector.errors[0][:160]}")
    lines += ["", "checks"]
    lines += [f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in verdict.checks]
    lines += ["", f"result: {'PASS' if verdict.ok else 'FAIL'} (seed {config.seed}; logs in {outcome.directory})"]
    return "\n".join(lines)


def _refusals(refusals: Counter[str]) -> str:
    return ", ".join(f"{what} {n}" for what, n in sorted(refusals.items())) or "none"


def _drain(seconds: float | None, limit: float) -> str:
    return f"{seconds:.1f} s (limit {limit:g} s)" if seconds is not None else f"not drained within {limit:g} s"


def _broker_lost(count: int) -> str:
    if not count:
        return "0"
    return (
        f"{count} send_event message(s) a worker took (BRPOP) and was SIGKILLed before kombu recorded it, "
        "or whose BRPOP reply a Redis crash lost: never seen by bento-tasks (see README, chaos campaign)"
    )


def _held(held: frozenset[str], messages: int, at_bento: set[str]) -> str:
    text = f"{len(held)} event(s) in {messages} send_event message(s) of killed workers"
    again = len(held & at_bento)
    if again:
        text += f"; {again} of them already at Bento: queued again when the broker restores the message"
    return text


def _restored(tasks: Counter[str]) -> str:
    kinds = ", ".join(f"{n} {task.rsplit('.', 1)[-1]}" for task, n in sorted(tasks.items()))
    return (
        f"{sum(tasks.values())} unacknowledged message(s) ({kinds or 'none'}), put back after the drain as the "
        "visibility_timeout would an hour later"
    )
