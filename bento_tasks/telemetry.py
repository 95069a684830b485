"""What the post task and the flush record for operators: pure definitions, no I/O.

The buffer stores these figures in Redis (cumulative counters, a histogram and a per-minute
series with a TTL); the admin chart and the Prometheus collector read them back. Keeping names,
buckets and status classes here means writer and readers cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Upper bounds (seconds) of the POST duration histogram; the last bucket is +Inf.
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)

#: Status classes of a POST, in display order. "429" is kept apart from "4xx" (rate limiting is not an
#: error of ours); "error" is a POST without an HTTP answer (timeout, refused or reset connection).
STATUS_CLASSES: tuple[str, ...] = ("2xx", "3xx", "4xx", "429", "5xx", "error")

#: How long a minute of the series is kept in Redis, seconds (a day and an hour).
SERIES_TTL = 25 * 3600

#: POSTs kept for the admin's "last POSTs" table, newest first.
RECENT_POSTS = 50

#: What a POST led to, as ``PostSample.action``.
ACTIONS = ("ack", "retry", "split", "bury")


def status_class(status: int | None) -> str:
    """The class of an HTTP status for counting POSTs: ``None`` (no answer) is "error"."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "error"


def bucket_label(bound: float) -> str:
    """A histogram bound as Prometheus writes it (``0.05``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def duration_bucket(seconds: float) -> str:
    """The label of the smallest bucket holding ``seconds``."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return bucket_label(bound)
    return "+Inf"  # NaN


def minute_of(timestamp: float) -> int:
    """The series minute (whole minutes since the epoch) a wall-clock time falls in."""
    return int(timestamp // 60)


@dataclass(frozen=True)
class PostSample:
    """One POST to Bento as the post task saw it, and what it did next."""

    status: int | None  # HTTP status, None when no answer came
    events: int  # events in the POST
    delivered: int  # events Bento recorded (its ``results``), 0 unless 2xx
    failed: int  # events Bento reported failed in a 2xx answer
    seconds: float  # wall time of the POST
    action: str  # one of ACTIONS
    dead_lettered: int = 0  # events this POST sent to the dead letters

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"PostSample.action must be one of {', '.join(ACTIONS)}, got {self.action!r}")

    def counter_increments(self) -> dict[str, int]:
        """Cumulative counters this POST adds to (field name -> increment)."""
        counts = {f"posts:{status_class(self.status)}": 1, f"duration_bucket:{duration_bucket(self.seconds)}": 1}
        if self.action == "retry":
            counts["retries"] = 1
        elif self.action == "split":
            counts["splits"] = 1
        if self.dead_lettered:
            counts["dead_lettered"] = self.dead_lettered
        return counts

    def minute_increments(self) -> dict[str, int]:
        """Per-minute series fields this POST adds to."""
        cls = status_class(self.status)
        counts = {"posts": 1, "delivered": self.delivered}
        if cls in ("429", "5xx", "error"):
            counts[f"status_{cls}"] = 1
        return counts
