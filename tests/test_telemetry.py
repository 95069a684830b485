"""Pure parts of the operations features: status classes, histogram buckets, samples, the chart, filters."""

from __future__ import annotations

import json
import math

import pytest

from bento_tasks import BentoError, InvalidFilter
from bento_tasks.buffer import DeadLetter, DeadLetterFilter, dead_letter_header
from bento_tasks.chart import last_hour_svg
from bento_tasks.prometheus import bearer_matches, families
from bento_tasks.telemetry import DURATION_BUCKETS, PostSample, bucket_label, duration_bucket, status_class


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        *[(200, "2xx"), (204, "2xx"), (301, "3xx"), (400, "4xx"), (422, "4xx"), (429, "429"), (500, "5xx")],
        *[(503, "5xx"), (None, "error"), (99, "error"), (600, "error")],
    ],
)
def test_status_class(status, cls):
    """POSTs are counted by class; 429 has its own, and no answer (or nonsense) is "error"."""
    assert status_class(status) == cls


@pytest.mark.parametrize(
    ("seconds", "label"), [(0.0, "0.05"), (0.05, "0.05"), (0.051, "0.1"), (2.5, "2.5"), (59.9, "60.0"), (61, "+Inf")]
)
def test_duration_bucket_is_the_smallest_bound_holding_it(seconds, label):
    """A duration lands in the first bucket whose upper bound is at or above it (Prometheus' le)."""
    assert duration_bucket(seconds) == label


def test_bucket_labels_follow_prometheus():
    """Bounds are written as Prometheus writes them and end with +Inf."""
    assert [bucket_label(b) for b in DURATION_BUCKETS][:3] == ["0.05", "0.1", "0.25"]
    assert math.isinf(DURATION_BUCKETS[-1]) and bucket_label(DURATION_BUCKETS[-1]) == "+Inf"


def test_a_sample_counts_what_the_post_led_to():
    """A retry, a split and a burial each add to their counter; 429/5xx/no answer to this minute's failures."""
    assert PostSample(200, 10, 10, 0, 0.3, "ack").counter_increments() == {
        "posts:2xx": 1,
        "duration_bucket:0.5": 1,
    }
    assert PostSample(503, 10, 0, 0, 0.01, "retry").counter_increments()["retries"] == 1
    assert PostSample(422, 10, 0, 0, 0.01, "split").counter_increments()["splits"] == 1
    assert PostSample(422, 1, 0, 0, 0.01, "bury", dead_lettered=1).counter_increments()["dead_lettered"] == 1
    assert PostSample(429, 5, 0, 0, 0.01, "retry").minute_increments() == {"posts": 1, "delivered": 0, "status_429": 1}
    assert PostSample(None, 5, 0, 0, 30, "retry").minute_increments()["status_error"] == 1
    assert PostSample(200, 5, 4, 1, 0.1, "ack").minute_increments() == {"posts": 1, "delivered": 4}


def test_a_sample_refuses_an_unknown_action():
    """A typo in the post task's action is a ValueError naming the field, not a silently wrong counter."""
    with pytest.raises(ValueError, match=r"PostSample\.action"):
        PostSample(200, 1, 1, 0, 0.1, "acked")


def rows(**overrides) -> list[dict]:
    base = [
        {"minute": 29_000_000 + i, "delivered": 0, "posts": 0, "status_429": 0, "status_5xx": 0, "status_error": 0}
        | {"depth": None}
        for i in range(60)
    ]
    for index, values in overrides.items():
        base[int(index.lstrip("m"))].update(values)
    return base


def test_chart_draws_bars_with_titles_and_breaks_the_depth_line_where_no_flush_ran():
    """Delivered and 429/5xx bars carry a <title> with the minute and value; depth is one line per run of
    flushed minutes."""
    svg = last_hour_svg(
        rows(
            m10={"depth": 5, "delivered": 1200},
            m11={"depth": 7},
            m30={"depth": 2, "status_429": 3, "status_5xx": 1},
        )
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<script" not in svg
    assert svg.count("<polyline") == 2  # minutes 10-11, then 30
    assert svg.count('class="delivered"') == 1 and "1,200 delivered</title>" in svg
    assert "3 answered 429</title>" in svg and "1 answered 5xx</title>" in svg
    assert ">2,000<" in svg  # delivered axis rounded up from 1,200


def test_chart_of_a_quiet_hour_has_no_bars():
    """With nothing recorded the chart is empty axes, still valid SVG."""
    svg = last_hour_svg(rows())
    assert "<rect" not in svg and "<polyline" not in svg and svg.endswith("</svg>")


def letter(email: object, reason: str = "retries exhausted: 503", status: int | None = 503) -> DeadLetter:
    event = json.dumps({"type": "t", "email": email}).encode()
    raw = dead_letter_header(reason, status) + b"\n" + event
    return DeadLetter(raw, event, reason, status, 1, "2026-01-01T00:00:00+00:00")


def test_dead_letter_filter_rules():
    """Reason contains (case-sensitive, like the CLI), status exact or "none", email contains (ASCII case-folded)."""
    a = letter("Jesse@Example.com")
    b = letter("walter@shop.test", "Bento refused the event: bad", 422)
    c = letter(None, "invalid Bento event: email: Missing data for required field.", None)
    assert [DeadLetterFilter(reason="refused").matches(x) for x in (a, b, c)] == [False, True, False]
    assert [DeadLetterFilter(reason="Refused").matches(x) for x in (a, b, c)] == [False, False, False]
    assert [DeadLetterFilter(status="none").matches(x) for x in (a, b, c)] == [False, False, True]
    assert [DeadLetterFilter(status="422").matches(x) for x in (a, b, c)] == [False, True, False]
    assert [DeadLetterFilter(email="jesse@EXAMPLE").matches(x) for x in (a, b, c)] == [True, False, False]
    assert all(DeadLetterFilter().matches(x) for x in (a, b, c)) and DeadLetterFilter().empty


def test_dead_letter_filter_refuses_a_bad_status():
    """A status filter that is neither empty, "none" nor a number is an InvalidFilter (a BentoError and a
    ValueError) naming the field, the value and what to give instead."""
    with pytest.raises(InvalidFilter, match="status filter '5xx' is not an HTTP status: give a code such as 503"):
        DeadLetterFilter(status="5xx")
    assert issubclass(InvalidFilter, BentoError) and issubclass(InvalidFilter, ValueError)


def test_metric_families_from_a_snapshot():
    """Gauges, counters and the histogram come out of one status snapshot and the counters, with units in names."""
    status = {
        "queued": 3,
        "in_flight": 2,
        "dead": 1,
        "batches_in_flight": 1,
        "batches_held": 1,
        "delivered": 10,
        "failed": 1,
        "batches_delivered": 2,
        "oldest_queued_age": None,
        "paused_until": "2026-01-01T00:01:00+00:00",
        "outbox": None,
    }
    counters = {"posts:2xx": 2, "duration_bucket:0.05": 1, "duration_bucket:1.0": 1, "duration_sum": 0.6}
    now = 1767225600.0  # 2026-01-01T00:00:00Z: 60 s before the pause ends
    found = {family.name: family for family in families(status, counters, now)}
    assert "bento_tasks_outbox_rows" not in found  # outbox off
    assert "bento_tasks_last_flush_age_seconds" not in found  # no flush ran yet: absent, not 0
    assert found["bento_tasks_paused"].samples[0].value == 1
    assert found["bento_tasks_pause_remaining_seconds"].samples[0].value == pytest.approx(60)
    assert found["bento_tasks_oldest_queued_age_seconds"].samples[0].value == 0
    assert found["bento_tasks_held_batches"].samples[0].value == 1
    buckets = {s.labels["le"]: s.value for s in found["bento_tasks_post_duration_seconds"].samples if "le" in s.labels}
    assert (buckets["0.05"], buckets["0.5"], buckets["1.0"], buckets["+Inf"]) == (1, 1, 2, 2)
    later = {f.name: f for f in families({**status, "outbox": 4, "last_flush_age": 2.5}, counters, now)}
    assert later["bento_tasks_outbox_rows"].samples[0].value == 4
    assert later["bento_tasks_outbox_oldest_age_seconds"].samples[0].value == 0  # its age: None, none waiting
    assert later["bento_tasks_last_flush_age_seconds"].samples[0].value == 2.5


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        *[("Bearer s3cret", "s3cret", True), ("bearer s3cret", "s3cret", True), ("Bearer wrong", "s3cret", False)],
        *[("Basic s3cret", "s3cret", False), (None, "s3cret", False), ("Bearer ", "", False)],
    ],
)
def test_bearer_token_check(header, token, ok):
    """Only "Bearer <the token>" passes; with no token configured nothing does."""
    assert bearer_matches(header, token) is ok
