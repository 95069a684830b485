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


def enqueue(raw: bytes, message: tuple[str, float] | None = None) -> None:
    """Hand an encoded event to the Redis buffer, or to a BENTO_DELIVERY test mode.

    ``message``: the id of the broker message carrying the event, and how long the broker may take to deliver
    it again; the event is then queued once per message (see ``Buffer.push_once``).
    """
    settings = get_settings()
    if settings.delivery != "redis":
        deliver(settings, raw)
        return
    if message is None:
        get_buffer().push(raw)
    else:
        get_buffer().push_once(message[0], raw, message[1])
