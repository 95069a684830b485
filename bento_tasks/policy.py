"""Retry timing: pure functions, so the backoff contract is tested without a clock."""

from __future__ import annotations

import random

from .conf import Settings


def backoff_delay(
    settings: Settings, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds before retry number ``attempt + 1``.

    The step doubles from BENTO_RETRY_BACKOFF up to BENTO_RETRY_BACKOFF_MAX; jitter spreads
    workers between half the step and the full step, and never undercuts Bento's Retry-After.
    """
    step = min(settings.retry_backoff_max, settings.retry_backoff * (2 ** min(attempt, 32)))
    delay = step / 2 + (rng or random).random() * step / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def countdown(settings: Settings, wait: float) -> float:
    """Celery countdown for a wait: long waits are re-checked in Redis rather than held as far-off ETAs.

    The broker redelivers a message it has not seen acknowledged after its visibility_timeout (one
    hour on Redis), so no countdown may come near it; BENTO_RETRY_BACKOFF_MAX is the ceiling.
    """
    return min(wait, settings.retry_backoff_max)


def rate_interval(settings: Settings) -> float:
    """Seconds between two POSTs across all workers (0: unlimited).

    One per cent of headroom keeps network jitter from pushing a POST into Bento's previous minute.
    """
    return 0.0 if settings.rate_limit == 0 else 60.0 / settings.rate_limit * 1.01


def dispatch_room(settings: Settings, batches_in_flight: int) -> int:
    """How many more batches a flush may claim now.

    Under a rate limit, about two ticks' worth of POSTs are kept in flight: enough that the
    limiter, not the beat, sets the pace, while a paused Bento does not pile up messages.
    """
    if settings.rate_limit == 0:
        return 1_000_000
    per_tick = -(-settings.rate_limit * settings.flush_interval // 60)
    return max(0, int(2 * max(per_tick, 1)) - batches_in_flight)
