"""Building, checking and encoding events: pure functions, no Redis, no HTTP."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import InvalidEvent, flatten_errors
from .schemas import EVENT_SCHEMA, EVENTS_SCHEMA, normalize_date


def _json_default(value: Any) -> str:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(type(value).__name__)


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)


def _locate_unencodable(value: Any, path: str) -> tuple[str, str] | None:
    """Find the first value json cannot encode; only walked once encoding already failed."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _locate_unencodable(item, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _locate_unencodable(item, f"{path}.{index}")
            if found:
                return found
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN and Infinity are not valid JSON."
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, "Contains characters that are not valid UTF-8 (lone surrogates)."
        return None
    try:
        _encoder.encode(value)
    except (TypeError, ValueError):
        return path, f"Cannot be serialized to JSON ({type(value).__name__})."
    return None


def build_event(
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    date: dt.datetime | str | None = None,
) -> dict[str, Any]:
    """The event as Bento documents it; a missing ``date`` is the call time, so a buffered event keeps it.

    ``date`` is queued in one form, UTC with microseconds and ``+00:00``; one that is not an aware
    datetime or an RFC 3339 string is left for ``encode_event`` to refuse, naming ``date``.
    """
    event: dict[str, Any] = {"type": type, "email": email}
    if fields is not None:
        event["fields"] = fields
    if details is not None:
        event["details"] = details
    # Stamped as text: it is what gets encoded anyway, and a string is cheaper than a datetime to encode,
    # in the queue entry and in a send_event broker message alike.
    if date is None:
        event["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
    else:
        event["date"] = normalize_date(date)
    return event


def encode_event(event: dict[str, Any], max_bytes: int) -> bytes:
    """Validate ``event`` and return its compact UTF-8 JSON; raise InvalidEvent naming the field."""
    errors = EVENT_SCHEMA.validate(event)
    if errors:
        raise InvalidEvent(flatten_errors(errors))
    try:
        raw = _encoder.encode(event).encode("utf-8")
    except RecursionError:
        # Only details may nest (fields are flat, validated above).
        raise InvalidEvent({"details": ["Nested too deeply to encode as JSON."]}) from None
    except (TypeError, ValueError):
        where = _locate_unencodable(event, "")
        path, message = where if where else (".", "Cannot be serialized to JSON.")
        raise InvalidEvent({path.lstrip("."): [message]}) from None
    if len(raw) > max_bytes:
        raise InvalidEvent(
            {"_event": [f"Event is {len(raw)} bytes; the limit (BENTO_MAX_EVENT_BYTES) is {max_bytes}."]}
        )
    return raw


def reason_text(errors: dict[str, list[str]]) -> str:
    return str(InvalidEvent(errors))


def _refuse_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON (and so Bento) does not.
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every entry: json.loads(raw, parse_constant=...) would build a new one per call.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
_decode = _decoder.decode
# JSONDecoder.__init__ sets it (json.scanner.make_scanner(self)); typeshed does not declare it.
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def _decode_entry(text: str) -> Any:
    """``_decode``, a third cheaper for the usual entry (compact JSON, as ``encode_event`` writes it): its C
    scanner reads one value from the start, and if that value ends exactly at the entry's end, that is what
    ``_decode`` would return. Anything else (surrounding whitespace, an error) goes through ``_decode``."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        return _decode(text)
    return value if end == len(text) else _decode(text)


def split_valid(raws: Iterable[bytes], max_bytes: int) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """Check raw queue entries before they are posted: whoever pushed them, only valid JSON events pass.

    Returns the valid entries unchanged (so they are never re-encoded) and ``(entry, reason)``
    for the others.
    """
    valid: list[bytes] = []
    rejected: list[tuple[bytes, str]] = []
    decoded: list[Any] = []
    candidates: list[bytes] = []
    for raw in raws:
        if len(raw) > max_bytes:
            rejected.append(
                (raw, reason_text({"_event": [f"{len(raw)} bytes exceeds BENTO_MAX_EVENT_BYTES ({max_bytes})"]}))
            )
            continue
        try:
            # Strictly UTF-8 (json.loads would also take UTF-16 or a BOM): entries are joined into one UTF-8 body.
            decoded.append(_decode_entry(raw.decode()))
        except (ValueError, RecursionError) as exc:  # ValueError includes UnicodeDecodeError
            rejected.append((raw, reason_text({"_event": [f"not valid UTF-8 JSON ({exc})"]})))
            continue
        candidates.append(raw)
    errors = EVENTS_SCHEMA.validate(decoded) if decoded else {}
    for index, raw in enumerate(candidates):
        if index in errors:
            rejected.append((raw, reason_text(flatten_errors(errors[index]))))
        else:
            valid.append(raw)
    return valid, rejected


def mask_email(email: Any, settings: Any) -> str:
    """``j***@example.com`` for log lines, unless BENTO_MASK_EMAILS is off."""
    text = str(email)
    if not settings.mask_emails:
        return text
    local, at, domain = text.partition("@")
    return f"{local[:1]}***{at}{domain}"
