"""Bento's documented rules for a batch request, as the fake enforces them.

Only the standard library: the fake checks the client against Bento's contract, never against the
client's own idea of it (nothing here imports the rest of bento_tasks).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

# The three events of Bento's "Create Events" example. The published page shows its addresses as
# "[email protected]" (its email obfuscation); a real address stands in for each.
EXAMPLE_EVENTS: list[dict[str, Any]] = [
    {"type": "$completed_onboarding", "email": "test@bentonow.com"},
    {
        "type": "$completed_onboarding",
        "email": "test@bentonow.com",
        "fields": {"first_name": "Jesse", "last_name": "Pinkman"},
    },
    {
        "email": "test@bentonow.com",
        "type": "$purchase",
        "fields": {"first_name": "Jesse"},
        "details": {
            "unique": {"key": "test123"},
            "value": {"currency": "USD", "amount": 8000},
            "cart": {
                "items": [{"product_sku": "SKU123", "product_name": "Test", "quantity": 100}],
                "abandoned_checkout_url": "https://test.com",
            },
        },
    },
]

EVENTS_PATH = "/api/v1/batch/events"
MAX_EVENTS = 1000
EVENT_KEYS = frozenset({"type", "email", "fields", "details", "date"})


class InvalidBody(Exception):
    """The request body breaks Bento's documented format; the message says how."""


def basic_credentials(header: str) -> tuple[str, str] | None:
    """The (user, password) of an HTTP Basic ``Authorization`` header, or None if it is not one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _reject_constant(name: str) -> None:
    raise InvalidBody(f"body is not valid JSON: {name} is not a JSON value")


def parse_batch(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The events of a batch body, or InvalidBody naming the first problem."""
    try:
        # NaN and Infinity are Python's extensions, not JSON: Bento refuses them.
        payload = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bad UTF-8
        raise InvalidBody(f"body is not valid JSON: {exc}") from None
    # A wrong Content-Type gets 400 rather than 415: Bento's docs list only 400
    # for a bad body, so that is what a client has to handle.
    if not content_type.lower().startswith("application/json"):
        raise InvalidBody(f"Content-Type must be application/json, got {content_type!r}")
    if not isinstance(payload, dict) or "events" not in payload:
        raise InvalidBody('body must be a JSON object with an "events" list')
    events = payload["events"]
    if not isinstance(events, list):
        raise InvalidBody('"events" must be a list')
    if not 1 <= len(events) <= MAX_EVENTS:
        raise InvalidBody(f'"events" must hold 1 to {MAX_EVENTS} events, got {len(events)}')
    for index, event in enumerate(events):
        check_event(index, event)
    return events


def check_event(index: int, event: object) -> None:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise InvalidBody(f"{where} must be an object")
    if not EVENT_KEYS.issuperset(event):
        raise InvalidBody(f"{where} has unknown key(s): {', '.join(sorted(event.keys() - EVENT_KEYS))}")
    for key in ("type", "email"):
        value = event.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidBody(f"{where}.{key} is required and must be a non-empty string")
    if "@" not in event["email"]:
        raise InvalidBody(f"{where}.email must be an email address")
    if "fields" in event:
        fields = event["fields"]
        if not isinstance(fields, dict):
            raise InvalidBody(f"{where}.fields must be an object")
        for name, value in fields.items():
            if isinstance(value, (dict, list)):
                raise InvalidBody(f"{where}.fields.{name} must not be an object or array (fields are flat)")
    if "details" in event and not isinstance(event["details"], dict):
        raise InvalidBody(f"{where}.details must be an object")
    if "date" in event and not is_rfc3339(event["date"]):
        raise InvalidBody(f"{where}.date must be an RFC 3339 date-time string with an offset")


# Bento's OpenAPI description (bentonow/api, bento-api.yaml) types an event's date as
# `format: date-time`: RFC 3339 section 5.6, date, "T", time, offset ("Z" or +hh:mm).
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str) or (match := _DATE_TIME.fullmatch(value)) is None:
        return False
    try:
        # The calendar and the clock: fromisoformat reads this form on every Python (and checks it in C, where
        # datetime() from eight int() calls was most of the fake's time per event). Second 60, a leap second,
        # reads as 59; 61 is refused.
        datetime.fromisoformat(f"{value[:10]}T{value[11:17]}{value[17:19].replace('60', '59')}")
    except ValueError:
        return False
    off_hour, off_minute = match.groups()
    return off_hour is None or (off_hour <= "23" and off_minute <= "59")
