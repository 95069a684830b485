"""The benchmark suite: ``python -m bench.run`` (``make bench``), or ``--smoke`` (``make bench-smoke``, CI).

Prints one table of figures measured side by side in this run, each against its floor or baseline.
Speed targets are reported, never asserted: the exit status is non-zero only when something is broken
(events lost or duplicated, refused requests, a pipeline that does not deliver).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

from . import dead_letters, harness
from .harness import ROOT, Stack, Worker, bento_event, encoded_events, event_date, median, spread, worker
from .segment import SegmentEndpoint


@dataclass(frozen=True)
class Sizes:
    caller_events: int  # track()/delay() calls per round
    caller_rounds: int
    backlog: int  # events drained by our worker, Segment and the scale-out runs
    naive_events: int  # the naive way is ~100x slower: its steady rate needs fewer events
    repeat: int  # runs of each throughput side
    limit_seconds: int  # how long to watch delivery under Bento's 100 requests/minute
    latency_seconds: int  # how long to send 50 events/s
    memory_sizes: tuple[int, int]  # small and large backlog
    dead_letters: int  # replayed and purged (the old way: a tenth of them)
    outbox: tuple[int, int, int, int]  # transactions per round, rounds; outbox rows relayed per round, rounds


FULL = Sizes(2000, 9, 100_000, 5_000, 5, 60, 60, (10_000, 1_000_000), 100_000, (1000, 9, 50_000, 5))
SMOKE = Sizes(300, 3, 20_000, 1000, 1, 15, 10, (5_000, 50_000), 20_000, (200, 3, 5_000, 2))


@dataclass
class Row:
    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: reported without a target
    runs: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def check(self, what: str, problems: Sequence[str]) -> None:
        self.broken += [f"{what}: {problem}" for problem in problems]


def check_delivery(stack: Stack, count: int, what: str, report: Report) -> None:
    """Once the last batch is acknowledged (no late duplicate can follow), each event arrived exactly once."""
    harness.wait_for(stack.settled, 30, "the last batches to be acknowledged")
    report.check(what, harness.check_exactly_once(stack.fake, count))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cpu_timed(fn: Callable[[], object]) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


# -- 1. caller cost -----------------------------------------------------------------------------


def _noop(type: str, email: str, fields: object = None, details: object = None, date: object = None) -> None:
    """The floor of a Celery producer: a task that does nothing, called with send_event's arguments."""


def caller_cost(sizes: Sizes, report: Report) -> None:
    import redis
    from celery import shared_task

    from bento_tasks import send_event, track
    from bento_tasks.celery import app

    # A shared_task like send_event, so both pay the same proxy look-up of the current app.
    noop = shared_task(name="bench.noop", ignore_result=True)(_noop)
    with Stack() as stack:
        stack.use_in_this_process()
        floor_client = redis.Redis.from_url(stack.redis_server.url(0))
        calls = [bento_event(n) for n in range(sizes.caller_events)]
        # the floor pushes the very JSON track() pushes (same size, same key names)
        raws = encoded_events(sizes.caller_events)
        track(**calls[0])  # connect and load the scripts outside the timing
        send_event.delay(**calls[0])
        rpush, tracks, noops, delays = [], [], [], []
        for _ in range(sizes.caller_rounds):  # interleaved, so drift hits both sides alike
            rpush.append(timed(lambda: [floor_client.rpush("bench:floor", raw) for raw in raws]))
            tracks.append(timed(lambda: [track(**call) for call in calls]))
            noops.append(timed(lambda: [noop.delay(**call) for call in calls]))
            delays.append(timed(lambda: [send_event.delay(**call) for call in calls]))
        app.close()
    per_call = 1e6 / sizes.caller_events
    track_ratios = [t / r for t, r in zip(tracks, rpush, strict=True)]
    delay_ratios = [d / n for d, n in zip(delays, noops, strict=True)]
    track_ratio, delay_ratio = median(track_ratios), median(delay_ratios)
    report.rows.append(
        Row(
            "1. caller: track() per event",
            f"{median(tracks) * per_call:.0f} µs",
            f"bare RPUSH {median(rpush) * per_call:.0f} µs",
            f"{track_ratio:.2f}x",
            "≤ 1.5x",
            track_ratio <= 1.5,
            spread(track_ratios, "{:.2f}x"),
        )
    )
    report.rows.append(
        Row(
            "1. caller: send_event.delay()",
            f"{median(delays) * per_call:.0f} µs",
            f"no-op task .delay() {median(noops) * per_call:.0f} µs",
            f"{delay_ratio:.2f}x",
            "≤ 1.2x",
            delay_ratio <= 1.2,
            spread(delay_ratios, "{:.2f}x"),
        )
    )


# -- 2 and 3. worker cost and throughput ---------------------------------------------------------


@dataclass
class Drain:
    rate: float  # events/s from the first POST to the last accepted event
    cpu_per_1000: float = 0.0  # worker CPU seconds per 1000 events (ours only)


def drain_ours(count: int, raws: list[bytes], report: Report) -> Drain:
    with Stack() as stack, worker(stack.env(BENTO_RATE_LIMIT="0", BENTO_FLUSH_INTERVAL="1")) as ours:
        ours.wait_idle()
        cpu = ours.cpu_seconds()
        stack.fill(raws)
        span = harness.delivery_span(stack.fake, count, timeout=120)
        cpu = ours.cpu_seconds() - cpu
        check_delivery(stack, count, "throughput (bento-tasks)", report)
    return Drain(count / span, cpu / count * 1000)


def drain_naive(count: int, report: Report) -> Drain:
    from celery import Celery

    with Stack() as stack:
        stack.use_in_this_process()
        # A new producer app for each stack: a Celery app keeps its first broker's connections.
        with Celery(set_as_current=False) as producer:
            for n in range(count):
                producer.send_task("bench.naive.post_one", kwargs={**bento_event(n), "date": event_date(n).isoformat()})
        # The backlog is in the broker before the worker starts; timing begins at its first POST.
        with worker(stack.env(BENTO_RATE_LIMIT="0"), app="bench.naive", beat=False):
            span = harness.delivery_span(stack.fake, count, timeout=count / 100 + 60)
        report.check("throughput (naive)", harness.check_exactly_once(stack.fake, count))
    return Drain(count / span)


def drain_segment(count: int, report: Report) -> Drain:
    endpoint = SegmentEndpoint()
    app = subprocess.Popen([sys.executable, "-m", "bench.segment", endpoint.url, str(count)], cwd=ROOT)
    try:
        done = endpoint.wait_for(count, timeout=count / 1000 + 120)
        app.wait(60)
    finally:
        if app.poll() is None:
            app.kill()
        endpoint.close()
    numbers = [int(user[4 : user.index("@")]) for user in endpoint.user_ids]
    if sorted(numbers) != list(range(count)):
        report.broken.append(f"throughput (Segment): {len(numbers)} messages, {len(set(numbers))} distinct")
    assert endpoint.first_post is not None
    return Drain(count / (done - endpoint.first_post))


def marshmallow_floor(raws: list[bytes]) -> float:
    """CPU seconds per 1000 events of marshmallow load(many=True) + JSON encoding of the same batches."""
    import json

    from bento_tasks.schemas import EVENTS_SCHEMA

    batches = [[json.loads(raw) for raw in raws[i : i + 1000]] for i in range(0, len(raws), 1000)]
    seconds = [
        cpu_timed(lambda: [json.dumps({"events": EVENTS_SCHEMA.load(b)}, default=str).encode() for b in batches])
        for _ in range(3)
    ]
    return median(seconds) / len(raws) * 1000


def throughput(sizes: Sizes, report: Report) -> None:
    raws = encoded_events(sizes.backlog)
    ours, naive, segment = [], [], []
    with harness.collector_paused():
        for _ in range(sizes.repeat):  # interleaved runs of the three sides
            ours.append(drain_ours(sizes.backlog, raws, report))
            naive.append(drain_naive(sizes.naive_events, report))
            segment.append(drain_segment(sizes.backlog, report))
    floor = marshmallow_floor(raws)
    cpu = median([run.cpu_per_1000 for run in ours])
    report.rows.append(
        Row(
            "2. worker CPU per 1000 events delivered",
            f"{cpu:.3f} s",
            f"marshmallow load(many) + JSON encode {floor:.3f} s",
            f"{cpu / floor:.2f}x",
            "report",
            None,
            spread([run.cpu_per_1000 for run in ours], "{:.3f} s"),
        )
    )
    rate, naive_rate, segment_rate = (median([run.rate for run in side]) for side in (ours, naive, segment))
    # Ratios within each round (run back to back), so a slow spell of the machine hits both sides.
    vs_naive = [o.rate / n.rate for o, n in zip(ours, naive, strict=True)]
    vs_segment = [o.rate / s.rate for o, s in zip(ours, segment, strict=True)]
    report.rows.append(
        Row(
            f"3. throughput, {sizes.backlog:,}-event backlog, 1 worker, no rate limit",
            f"{rate:,.0f} events/s",
            f"naive {naive_rate:,.0f}/s ({sizes.naive_events:,} events)",
            f"{median(vs_naive):.0f}x",
            "≥ 70x",
            median(vs_naive) >= 70,
            f"ours {spread([r.rate for r in ours], '{:,.0f}/s')}; ratio {spread(vs_naive, '{:.0f}x')}",
        )
    )
    report.rows.append(
        Row(
            "3. throughput vs Segment's client (same events)",
            f"{rate:,.0f} events/s",
            f"Segment {segment_rate:,.0f}/s",
            f"{median(vs_segment):.2f}x",  # two places: 2.46 must not read as the 2.5 it misses
            "≥ 2.5x",
            median(vs_segment) >= 2.5,
            f"Segment {spread([r.rate for r in segment], '{:,.0f}/s')}; ratio {spread(vs_segment, '{:.1f}x')}",
        )
    )


# -- 4. under Bento's rate limit ------------------------------------------------------------------


def under_limit(sizes: Sizes, report: Report) -> None:
    window = sizes.limit_seconds
    count = int(100 * 1000 * window / 60 * 1.2)  # more than the window can take: the limit is the bound
    with Stack(rate_limit_per_minute=100) as stack, worker(stack.env(BENTO_FLUSH_INTERVAL="1")) as ours:
        ours.wait_idle()
        stack.fill(encoded_events(count))
        first = harness.wait_for(lambda: stack.fake.requests, 30, "the first POST")[0].received_at
        time.sleep(max(0.0, first + window + 1 - time.time()))
        requests = stack.fake.requests
    accepted = [r for r in requests if r.received_at < first + window and r.status == 200]
    # The rate between the first and the last accepted POST of the window: counting whole requests in the
    # window would credit a fencepost (N+1 requests fit in N intervals) and read 100%.
    per_minute = sum(len(r.events) for r in accepted[:-1]) / (accepted[-1].received_at - first) * 60
    throttled = sum(1 for r in requests if r.status == 429)
    numbers = [harness.event_number(e) for r in requests for e in r.events]
    if len(numbers) != len(set(numbers)):
        report.broken.append(f"under the rate limit: {len(numbers) - len(set(numbers))} duplicates")
    report.rows.append(
        Row(
            f"4. under 100 requests/min (fake enforces it), {window} s",
            f"{per_minute:,.0f} events/min ({len(accepted)} POSTs in {window} s), {throttled} answers 429",
            "theoretical 100,000/min",
            f"{per_minute / 1000:.1f}%",
            "≥ 95%, no 429",
            per_minute >= 95_000 and throttled == 0,
            "1 run",
        )
    )


# -- 5. latency at low load ----------------------------------------------------------------------


def latency(sizes: Sizes, report: Report) -> None:
    rate, interval = 50, 5.0
    count = rate * sizes.latency_seconds
    with Stack() as stack, worker(stack.env(BENTO_FLUSH_INTERVAL=str(interval))) as ours:
        ours.wait_idle()
        stack.use_in_this_process(BENTO_FLUSH_INTERVAL=str(interval))
        from bento_tasks import track

        started = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            track(**bento_event(n))  # stamps date with the call time
        stack.fake.wait_for_events(count, timeout=interval + 60)
        requests = stack.fake.requests
        check_delivery(stack, count, "latency", report)
    delays = sorted(
        r.received_at - dt.datetime.fromisoformat(e["date"]).timestamp() for r in requests for e in r.events
    )
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    report.rows.append(
        Row(
            f"5. latency track() → fake, {rate} events/s, flush every {interval:g} s",
            f"p50 {p50:.2f} s, p99 {p99:.2f} s",
            f"{count:,} events",
            "",
            f"p99 < {interval + 1:g} s",
            p99 < interval + 1,
            "1 run",
        )
    )


# -- 6. memory -----------------------------------------------------------------------------------


def memory(sizes: Sizes, report: Report) -> None:
    peaks = []
    for count in sizes.memory_sizes:
        raws = encoded_events(count)
        with Stack() as stack, worker(stack.env(BENTO_RATE_LIMIT="0", BENTO_FLUSH_INTERVAL="1")) as ours:
            ours.wait_idle()
            stack.fill(raws)
            stack.fake.wait_for_events(count, timeout=count / 5000 + 60)
            peaks.append(ours.peak_rss())
            check_delivery(stack, count, f"memory ({count:,} events)", report)
        del raws
    small, large = sizes.memory_sizes
    growth = peaks[1] / peaks[0] - 1
    report.rows.append(
        Row(
            f"6. worker peak RSS draining {large:,} events",
            f"{peaks[1] / 2**20:.0f} MiB",
            f"{small:,} events: {peaks[0] / 2**20:.0f} MiB",
            f"{growth:+.1%}",
            "within 20%",
            abs(growth) <= 0.2,
            "1 run; all worker processes' VmHWM",
        )
    )


# -- 7. scale-out --------------------------------------------------------------------------------


def scale_out(sizes: Sizes, report: Report) -> None:
    count, rates = sizes.backlog, {}
    raws = encoded_events(count)
    for processes in (1, 2, 4):
        with Stack() as stack:
            env = stack.env(BENTO_RATE_LIMIT="0", BENTO_FLUSH_INTERVAL="1")
            # One beat (as deployed); every worker takes flushes and posts from the same broker queue.
            workers = [Worker(env, concurrency=1, beat=i == 0) for i in range(processes)]
            try:
                for each in workers:
                    each.wait_idle()
                stack.fill(raws)
                rates[processes] = count / harness.delivery_span(stack.fake, count, timeout=180)
                check_delivery(stack, count, f"scale-out ({processes} workers)", report)
            finally:
                for each in workers:
                    each.stop()
    report.rows.append(
        Row(
            f"7. scale-out: 1 / 2 / 4 worker processes, {count:,} events",
            " / ".join(f"{rates[n]:,.0f}" for n in (1, 2, 4)) + " events/s",
            "1 process",
            " / ".join(f"{rates[n] / rates[1]:.2f}x" for n in (1, 2, 4)),
            "no duplicates",
            None,
            "1 run each",
        )
    )


# -- 8. dead letters at scale ----------------------------------------------------------------------


def dead_letter_ops(sizes: Sizes, report: Report) -> None:
    count = sizes.dead_letters
    try:
        seconds = dead_letters.measure(count)
    except RuntimeError as exc:
        report.broken.append(f"dead letters: {exc}")
        return
    old_per_letter = seconds["old"] / (count // 10)
    report.rows.append(
        Row(
            f"8. dead replay --reason, {count:,} letters (half match, behind the other half)",
            f"{seconds['reason']:.2f} s",
            f"old way (an LREM per letter) on {count // 10:,}: {seconds['old']:.2f} s",
            f"{old_per_letter / (seconds['reason'] / count):.0f}x less per letter",
            "≤ 5 s",
            seconds["reason"] <= 5,
            "1 run",
        )
    )
    report.rows.append(
        Row(
            f"8. dead replay --all / dead purge, {count:,} letters",
            f"{seconds['all']:.2f} s / {seconds['purge']:.2f} s",
            "",
            "",
            "≤ 5 s",
            max(seconds["all"], seconds["purge"]) <= 5,
            "1 run",
        )
    )


# -- 9. the outbox ---------------------------------------------------------------------------------


def outbox(sizes: Sizes, report: Report) -> None:
    """bench/outbox.py in a process of its own (it configures Django), on PostgreSQL."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.outbox", *map(str, sizes.outbox)], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        report.broken.append(f"outbox: bench/outbox.py failed (PostgreSQL on 127.0.0.1:5432?):\n{done.stderr[-2000:]}")
        return
    result = json.loads(done.stdout)
    write, relay = result["write"], result["relay"]
    report.check("outbox write", write["problems"])
    report.check("outbox relay", relay["problems"])
    calls, _, rows, _ = sizes.outbox
    us = write["per_call_us"]
    ratio = median(write["ratios"])
    report.rows.append(
        Row(
            "9. send_event_on_commit with BENTO_OUTBOX, in a transaction with an order INSERT (PostgreSQL)",
            f"{us['ours']:.0f} µs per transaction, relay thread included",
            f"the order alone {us['alone']:.0f} µs",
            f"{ratio:.2f}x",
            "≤ 1.3x",
            ratio <= 1.3,
            f"{spread(write['ratios'], '{:.2f}x')} of {calls:,}; the INSERT alone "
            f"{median(write['insert_ratios']):.2f}x; in Redis {write['tail_ms']:.0f} ms after the last commit",
        )
    )
    rate, ratio = relay["rates"]["ours"], median(relay["ratios"])
    report.rows.append(
        Row(
            f"9. outbox relay(), {rows:,}-row backlog to Redis, 1 relay (PostgreSQL)",
            f"{rate:,.0f} rows/s",
            f"bare SELECT ... FOR UPDATE SKIP LOCKED + DELETE + RPUSH {relay['rates']['floor']:,.0f} rows/s",
            f"{ratio:.2f}x",
            "≥ 0.7x, ≫ 1,667/s",
            ratio >= 0.7 and rate > 10 * 1667,
            f"ratio {spread(relay['ratios'], '{:.2f}x')}; ours {spread(relay['ours_rates'], '{:,.0f}/s')}",
        )
    )


# -- the table -----------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Sizes, Report], None]] = {
    "caller": caller_cost,
    "throughput": throughput,
    "limit": under_limit,
    "latency": latency,
    "memory": memory,
    "scale": scale_out,
    "dead": dead_letter_ops,
    "outbox": outbox,
}


def machine() -> str:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    packages = ", ".join(f"{name} {metadata.version(name)}" for name in ("celery", "kombu", "redis", "marshmallow"))
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, Redis {redis_version[2:]}; "
        f"{packages}"
    )


def table(rows: list[Row]) -> str:
    header = ["Measure", "bento-tasks", "Floor / baseline", "Ratio", "Target", "Met", "Runs (noise)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        met = "n/a" if row.met is None else "yes" if row.met else "NO"
        cells = [row.measure, row.ours, row.baseline, row.ratio, row.target, met, row.runs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI): checks the suite works, ~2 min")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    report = Report()
    started = time.monotonic()
    for name in args.only.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        SECTIONS[name](sizes, report)
    print(f"\n{'Smoke run' if args.smoke else 'Benchmarks'} on {machine()}, in {time.monotonic() - started:.0f} s:\n")
    print(table(report.rows))
    if report.broken:
        print("\nBROKEN:\n" + "\n".join(f"- {problem}" for problem in report.broken))
        print(f"(worker logs in {harness.WORKDIR})")
        return 1
    shutil.rmtree(harness.WORKDIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
