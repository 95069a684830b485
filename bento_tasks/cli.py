"""``bento-tasks`` / ``python -m bento_tasks``: status, dead letters, flush, resume, relay, metrics, a local fake Bento.

``manage.py bento ...`` runs this same parser and these same functions (see
``bento_tasks/management/commands/bento.py``), so both print the same and exit the same.

Every failure to reach Redis or to resolve the settings is one line on stderr (and with ``status
--json`` a JSON object with an ``error`` string) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence

from . import conf
from .buffer import DeadLetterFilter, get_buffer
from .exceptions import BufferUnavailable, ConfigurationError
from .status import origin, redis_text, snapshot

#: status --check fails when no flush ran for this many flush intervals: no beat is running.
STALE_FLUSH_INTERVALS = 3
#: The port ``fake-bento`` listens on unless told otherwise, so exported settings survive a restart.
FAKE_BENTO_PORT = 8765


def _print_table(rows: dict[str, object]) -> None:
    width = max(len(key) for key in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")


def _warn_settings() -> None:
    # Settings bento-tasks ignores or doubts: the first thing to suspect when status shows unexpected numbers.
    for problem in conf.resolve().warnings:
        print(f"bento-tasks: warning: {problem}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    settings = conf.get_settings()
    _warn_settings()
    try:
        status = snapshot()
    except BufferUnavailable as exc:
        if args.json:
            print(json.dumps({"error": str(exc), **origin(settings)}))
        else:
            print(f"bento-tasks: {exc} (settings from {settings.source})", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status))
    else:
        _print_table({**status, "redis": redis_text(status["redis"])})
    if not args.check:
        return 0
    problems = []
    if status["paused_until"]:
        problems.append(f"delivery paused until {status['paused_until']}")
    age = status["oldest_queued_age"]
    if age is not None and age > args.max_age:
        problems.append(f"oldest queued event is {age:.0f}s old (limit {args.max_age:.0f}s)")
    stale = STALE_FLUSH_INTERVALS * settings.flush_interval
    flushed = status["last_flush_age"]
    if flushed is not None and flushed > stale:
        problems.append(
            f"no flush ran for {flushed:.0f}s ({STALE_FLUSH_INTERVALS} x BENTO_FLUSH_INTERVAL = {stale:g}s): "
            "is celery beat running (celery -A proj beat, or a worker with -B)?"
        )
    elif flushed is None and age is not None and age > stale:
        problems.append(
            f"{status['queued']} event(s) queued, the oldest {age:.0f}s ago, and no flush has ever run: "
            "is celery beat running (celery -A proj beat, or a worker with -B)?"
        )
    outbox_age = status["outbox_oldest_age"]
    if outbox_age is not None and outbox_age > args.max_age:
        problems.append(f"oldest outbox row is {outbox_age:.0f}s old (limit {args.max_age:.0f}s): is beat relaying?")
    for problem in problems:
        print(f"bento-tasks: unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _resume(args: argparse.Namespace) -> int:
    was_paused, waiting = get_buffer().resume()
    print("pause ended" if was_paused else "delivery was not paused")
    print(f"{waiting} waiting batch(es) go at the next flush")
    return 0


def _dead_list(args: argparse.Namespace) -> int:
    buffer = get_buffer()
    letters = [letter.as_dict() for letter in buffer.dead_letters(args.limit)]
    _, reports = buffer.failure_reports(args.limit)
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
    moved = get_buffer().replay(DeadLetterFilter() if args.all else DeadLetterFilter(reason=args.reason))
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


def _fake_bento(args: argparse.Namespace) -> int:
    from .testing import FakeBento

    fake = FakeBento(port=args.port)
    try:
        fake.start()
    except OSError as exc:
        print(f"bento-tasks: cannot listen on 127.0.0.1:{args.port}: {exc}; try --port N", file=sys.stderr)
        return 2
    print("# A fake Bento for local development: it checks requests as Bento does and keeps nothing.")
    print("# Use these settings in the shells of your worker and web process (Ctrl-C stops the fake):")
    for name, value in (
        ("BENTO_API_URL", fake.url),
        ("BENTO_SITE_UUID", fake.site_uuid),
        ("BENTO_PUBLISHABLE_KEY", fake.publishable_key),
        ("BENTO_SECRET_KEY", fake.secret_key),
    ):
        print(f"export {name}={value}")
    sys.stdout.flush()
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            requests = fake.requests
            for request in requests[seen:]:
                at = dt.datetime.fromtimestamp(request.received_at).strftime("%H:%M:%S")
                if request.events:
                    kinds = ", ".join(sorted({str(event.get("type")) for event in request.events}))
                    outcome = f"{len(request.events)} event(s) {kinds}"
                else:
                    outcome = request.response_body[:200].decode("utf-8", "replace")
                print(f"{at} {request.method} {request.path} {request.status}: {outcome}")
            seen = len(requests)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"# stopped; {len(fake.events)} event(s) accepted")
    finally:
        fake.stop()
    return 0


def _flush(args: argparse.Namespace) -> int:
    # The flush task, run here: it dispatches post_batch through the current Celery app (the project's
    # under manage.py; otherwise Celery's default app, which takes CELERY_BROKER_URL).
    from .tasks import flush_events

    counts = flush_events()
    if args.json:
        print(json.dumps(counts))
    else:
        print(
            f"recovered {counts['recovered']} batch(es), released {counts['released']} deferred batch(es), "
            f"dispatched {counts['dispatched']} batch(es)"
        )
    return 0


def _relay(args: argparse.Namespace) -> int:
    if not conf.load_django():
        print(
            "bento-tasks: relay needs Django: the outbox is a table of a Django project. "
            "Run `manage.py bento relay` there, or set DJANGO_SETTINGS_MODULE.",
            file=sys.stderr,
        )
        return 2
    from . import outbox

    if args.database is not None and not outbox.is_database(args.database):
        print(f"bento-tasks: --database {args.database!r} is not in DATABASES", file=sys.stderr)
        return 2
    try:
        relayed = outbox.relay(using=args.database)
    except outbox.DatabaseError as exc:
        print(f"bento-tasks: the outbox relay could not read the database: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"rows": relayed.rows, "pushed": relayed.pushed}))
    else:
        print(f"relayed {relayed.rows} outbox row(s): {relayed.pushed} event(s) pushed to Redis")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    try:
        from .prometheus import serve
    except ImportError:
        print("bento-tasks: metrics need prometheus-client: pip install 'bento-tasks[prometheus]'", file=sys.stderr)
        return 2
    serve(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bento-tasks", description="Inspect the bento-tasks buffer in Redis, or run a local fake Bento."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="queued, in-flight and dead event counts")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--check", action="store_true", help="health check: exit 1 if paused or the queue is stale")
    status.add_argument(
        "--max-age", type=float, default=300.0, help="with --check: oldest queued event allowed, seconds (300)"
    )
    status.set_defaults(run=_status)
    resume = commands.add_parser(
        "resume", help="end a delivery pause (e.g. after fixing the keys) and send every waiting batch now"
    )
    resume.set_defaults(run=_resume)
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
    fake = commands.add_parser("fake-bento", help="run a fake Bento in the foreground (development without an account)")
    fake.add_argument(
        "--port", type=int, default=FAKE_BENTO_PORT, help=f"port on 127.0.0.1 (default {FAKE_BENTO_PORT}; 0: any free)"
    )
    fake.set_defaults(run=_fake_bento)
    flush = commands.add_parser("flush", help="run one flush now (claim and dispatch batches), e.g. after a deploy")
    flush.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    flush.set_defaults(run=_flush)
    relay = commands.add_parser(
        "relay", help="move every waiting outbox row (BENTO_OUTBOX) to the Redis queue now; needs Django"
    )
    relay.add_argument("--database", help="only this database alias (default: every one with the outbox table)")
    relay.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    relay.set_defaults(run=_relay)
    metrics = commands.add_parser("metrics", help="serve Prometheus metrics over HTTP (needs the prometheus extra)")
    metrics.add_argument("--port", type=int, default=9808, help="port to listen on (9808)")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    metrics.set_defaults(run=_metrics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigurationError, BufferUnavailable) as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"bento-tasks: {exc}", file=sys.stderr)
        return 2
