"""``bento-tasks`` / ``python -m bento_tasks``: status and dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import conf
from .buffer import get_buffer
from .conf import ConfigurationError, get_settings


def _print_table(rows: dict[str, object]) -> None:
    width = max(len(key) for key in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")


def _outbox_backlog() -> dict[str, object]:
    """``outbox`` rows waiting and ``outbox_oldest_age`` seconds; both None when the outbox is off or Django is not."""
    if not get_settings().outbox or conf._django_settings() is None:
        return {"outbox": None, "outbox_oldest_age": None}
    import django
    from django.apps import apps

    if not apps.ready:  # the ORM needs the app registry: `manage.py` loads it, `python -m bento_tasks` must
        django.setup()
    from . import outbox

    count, age = outbox.backlog()
    return {"outbox": count, "outbox_oldest_age": age}


def _status(args: argparse.Namespace) -> int:
    status = {**get_buffer().status(), **_outbox_backlog()}
    if args.json:
        print(json.dumps(status))
    else:
        _print_table(status)
    if not args.check:
        return 0
    problems = []
    if status["paused_until"]:
        problems.append(f"delivery paused until {status['paused_until']}")
    age = status["oldest_queued_age"]
    if age is not None and age > args.max_age:
        problems.append(f"oldest queued event is {age:.0f}s old (limit {args.max_age:.0f}s)")
    outbox_age = status["outbox_oldest_age"]
    if outbox_age is not None and outbox_age > args.max_age:
        problems.append(f"oldest outbox row is {outbox_age:.0f}s old (limit {args.max_age:.0f}s): is beat relaying?")
    for problem in problems:
        print(f"bento-tasks: unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _dead_list(args: argparse.Namespace) -> int:
    buffer = get_buffer()
    letters = [letter.as_dict() for letter in buffer.dead_letters(args.limit)]
    reports = buffer.failure_reports(args.limit)
    if args.json:
        print(json.dumps({"dead_letters": letters, "bento_failures": reports}))
        return 0
    for letter in letters:
        event = letter["event"]
        summary = f"{event.get('type')} {event.get('email')}" if isinstance(event, dict) else str(event)[:60]
        print(f"{letter['time']}  status={letter['status'] or '-'}  attempts={letter['attempts']}  {summary}")
        print(f"    {letter['reason']}")
    print(f"{len(letters)} dead letter(s) shown")
    for report in reports:
        print(
            f"{report['time']}  Bento accepted a batch of {report['batch_size']} but reported {report['failed']} failed"
        )
    if reports:
        print(f"{len(reports)} batch(es) with events Bento reported failed (it does not say which; not resent)")
    return 0


def _dead_replay(args: argparse.Namespace) -> int:
    if not args.all and args.reason is None:
        print("say which dead letters to replay: --all, or --reason TEXT", file=sys.stderr)
        return 2
    moved = get_buffer().replay(None if args.all else args.reason)
    print(f"{moved} event(s) put back on the queue")
    return 0


def _dead_purge(args: argparse.Namespace) -> int:
    buffer = get_buffer()
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to purge without confirmation: pass --yes", file=sys.stderr)
            return 2
        count = buffer.status()["dead"]
        if input(f"Delete {count} dead letter(s) for good? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    print(f"{buffer.purge_dead()} dead letter(s) deleted")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bento-tasks", description="Inspect the bento-tasks buffer in Redis.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="queued, in-flight and dead event counts")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--check", action="store_true", help="health check: exit 1 if paused or the queue is stale")
    status.add_argument(
        "--max-age", type=float, default=300.0, help="with --check: oldest queued event allowed, seconds (300)"
    )
    status.set_defaults(run=_status)
    dead = commands.add_parser("dead", help="list, replay or purge dead letters").add_subparsers(
        dest="action", required=True
    )
    listing = dead.add_parser("list", help="show dead letters with their reason")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (-1: all); default 100")
    listing.set_defaults(run=_dead_list)
    replay = dead.add_parser("replay", help="put dead letters back on the queue")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true")
    which.add_argument("--reason", help="only those whose reason contains this text")
    replay.set_defaults(run=_dead_replay)
    purge = dead.add_parser("purge", help="delete every dead letter")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(run=_dead_purge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigurationError as exc:
        print(f"bento-tasks: {exc}", file=sys.stderr)
        return 2
