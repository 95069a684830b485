"""Dead letters at scale: ``dead replay --reason``, ``--all`` and ``purge`` on a large list, against the old way.

The old replay removed each matching letter with its own LREM, a walk of the list per letter: quadratic
when the matches sit behind many others. It is measured here, on a tenth of the letters, as the baseline;
``python -m bench.dead_letters [N]`` runs this section alone.
"""

from __future__ import annotations

import sys
import tempfile
import time

import redis

from bento_tasks.buffer import Buffer, DeadLetterFilter, dead_letter_header
from bento_tasks.conf import Settings
from bento_tasks.testing import RedisServer

from .harness import WORKDIR, encoded_events

MATCHING, OTHER = "unanswered: Bento did not answer 3 times", "Bento refused the event: 422"


def fill(client: redis.Redis, key: str, count: int) -> None:
    """``count`` dead letters: the half that does not match ahead of the half that does (the worst case for LREM)."""
    events = encoded_events(count)
    half = count // 2
    other, matching = dead_letter_header(OTHER) + b"\n", dead_letter_header(MATCHING) + b"\n"
    letters = [other + e for e in events[:half]] + [matching + e for e in events[half:]]
    pipe = client.pipeline(transaction=False)
    for i in range(0, count, 10_000):
        pipe.rpush(key, *letters[i : i + 10_000])
    pipe.execute()


def old_replay(buffer: Buffer, reason: str) -> int:
    """The replay this package had before: one LREM (a walk of the list) per matching letter."""
    moved = 0
    for raw in buffer.redis.lrange(buffer.dead_key, 0, -1):
        header, _, event = raw.partition(b"\n")
        if reason.encode() in header and buffer.redis.lrem(buffer.dead_key, 1, raw):
            buffer.redis.rpush(buffer.queue_key, event)
            moved += 1
    return moved


def measure(count: int) -> dict[str, float]:
    """Seconds for each operation on ``count`` letters (the old way on count // 10); raises if one moved wrongly."""
    with RedisServer(tempfile.mkdtemp(dir=WORKDIR, prefix="redis-")) as server:
        client = redis.Redis.from_url(server.url(0))
        buffer = Buffer(Settings(site_uuid="s", publishable_key="p", secret_key="k", redis_url=server.url(0)), client)
        seconds: dict[str, float] = {}
        for name, size, run in (
            ("old", count // 10, lambda: old_replay(buffer, "unanswered")),
            ("reason", count, lambda: buffer.replay(DeadLetterFilter(reason="unanswered"))),
            ("all", count, lambda: buffer.replay(DeadLetterFilter())),
        ):
            client.flushall()
            fill(client, buffer.dead_key, size)
            started = time.perf_counter()
            moved = run()
            seconds[name] = time.perf_counter() - started
            expected = size if name == "all" else size - size // 2
            if moved != expected or client.llen(buffer.queue_key) != expected:
                raise RuntimeError(f"replay ({name}) moved {moved} letters, expected {expected}")
        fill(client, buffer.dead_key, count)
        started = time.perf_counter()
        if buffer.purge_dead() != count:
            raise RuntimeError("purge did not delete every letter")
        seconds["purge"] = time.perf_counter() - started
    return seconds


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100_000
    seconds = measure(count)
    print(f"old replay --reason, {count // 10:,} letters: {seconds['old']:.2f} s")
    for name in ("reason", "all", "purge"):
        print(f"{name}, {count:,} letters: {seconds[name]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
