"""``track()``: validate now, push to Redis directly, no broker round trip."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .buffer import get_buffer
from .conf import get_settings
from .events import build_event, encode_event
from .testmode import deliver


def track(
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    date: dt.datetime | str | None = None,
) -> None:
    """Queue one event for Bento.

    Raises ``InvalidEvent`` (a ValueError naming the field) before anything is stored, and
    ``BufferUnavailable`` if Redis cannot take the event: it is never dropped silently.
    """
    enqueue(encode_event(build_event(type, email, fields, details, date), get_settings().max_event_bytes))


def enqueue(raw: bytes) -> None:
    """Hand an encoded event to the Redis buffer, or to a BENTO_DELIVERY test mode."""
    settings = get_settings()
    if settings.delivery != "redis":
        deliver(settings, raw)
        return
    get_buffer().push(raw)
