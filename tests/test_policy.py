"""Retry timing: the backoff contract and the rate-share arithmetic."""

from __future__ import annotations

import random

from bento_tasks.conf import Settings
from bento_tasks.policy import backoff_delay, countdown, dispatch_room, rate_interval

DEFAULTS = Settings(site_uuid="s", publishable_key="p", secret_key="k")


def test_backoff_doubles_jitters_and_caps():
    """Each delay lies between half its step and the step; steps double up to the cap."""
    rng = random.Random(1)
    for attempt in range(60):
        step = min(DEFAULTS.retry_backoff_max, DEFAULTS.retry_backoff * 2**attempt)
        for _ in range(50):
            assert step / 2 <= backoff_delay(DEFAULTS, attempt, rng=rng) <= step


def test_backoff_never_undercuts_retry_after():
    """A Retry-After longer than the step wins."""
    assert backoff_delay(DEFAULTS, 0, retry_after=42) >= 42


def test_defaults_ride_out_a_one_hour_outage():
    """Even with the shortest jitter every time, the default retries span more than an hour."""
    shortest = sum(
        min(DEFAULTS.retry_backoff_max, DEFAULTS.retry_backoff * 2**a) / 2 for a in range(DEFAULTS.max_retries)
    )
    assert shortest > 3600


def test_countdowns_stay_far_below_the_visibility_timeout():
    """However long the wait, one Celery countdown is at most BENTO_RETRY_BACKOFF_MAX (5 min by default)."""
    assert countdown(DEFAULTS, 7200) == DEFAULTS.retry_backoff_max < 3600 / 10


def test_rate_interval_keeps_under_the_limit():
    """100 requests a minute means a little over 0.6 s between POSTs; 0 lifts the limit."""
    assert 0.6 < rate_interval(DEFAULTS) < 0.61
    assert rate_interval(Settings(site_uuid="s", publishable_key="p", secret_key="k", rate_limit=0)) == 0


def test_dispatch_room_follows_the_rate_share():
    """A 5 s tick at 100/min keeps two ticks of POSTs (18 batches) in flight."""
    assert dispatch_room(DEFAULTS, 0) == 18
    assert dispatch_room(DEFAULTS, 18) == 0
