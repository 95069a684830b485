"""Marshmallow schemas of a Bento event and a batch, as Bento's API documentation describes them.

Every event goes through ``EventSchema`` twice (``track()``, then ``post_batch`` before the POST), so it
is built for speed (profiled: marshmallow's machinery, not the checks themselves, was most of the
worker's CPU time; see bench/RESULTS.md):

- each field checks a whole value in one call, where ``Dict(keys=..., values=...)`` would make two
  field calls per entry, and builds its validator chain once, not per value;
- ``EventSchema.validate`` runs the same marshmallow fields over each event in a fixed loop instead of
  the generic ``Schema`` machinery (partial loading, hooks, error stores), and falls back to that
  machinery whenever an event is refused, so errors are exactly marshmallow's;
- in that loop each field first asks its ``accepts``: a test of the usual value (a plain ``str`` or
  ``dict`` from decoded JSON) that says yes only where ``deserialize`` would return the value unchanged,
  using the same regular expressions and rules; anything else goes through ``deserialize``. Calling a
  marshmallow field costs about 1 µs before it checks anything: most of a batch's validation.

Errors keep the layout marshmallow's own fields give (``{"fields": {"plan": {"value": [...]}}}``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, missing, validate
from marshmallow import fields as ma

from .conf import MAX_BATCH_SIZE

# Values that serialize to a JSON scalar: what a flat ``fields`` object may hold.
_SCALARS = (str, int, float, bool, dt.date, decimal.Decimal, uuid.UUID)
# The scalar types decoded JSON holds, for ``FlatObject.accepts``: the above's JSON ones, and null.
_JSON_SCALARS = frozenset((str, int, float, bool, type(None)))


class _FastField:
    """Mixin for the event's fields. marshmallow 4 wraps a field's validators in a new ``And`` for every
    value: wrap them once, and skip the call for a field that has none. ``accepts``: see the module's doc."""

    validators: list[Callable[[Any], Any]]

    def accepts(self, value: Any) -> bool:
        """True only for a value ``deserialize`` returns unchanged without error; False: ask ``deserialize``."""
        return False

    @functools.cached_property
    def _validate_all(self) -> Callable[[Any], Any]:
        return validate.And(*self.validators)

    def _validate(self, value: Any) -> None:
        if self.validators:
            self._validate_all(value)


class NonEmptyText(_FastField, ma.String):
    """A string of one character or more, refused with ``Length(min=1)``'s error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=1), **kwargs)

    def accepts(self, value: Any) -> bool:
        return type(value) is str and value != ""


_USER = validate.Email.USER_REGEX.match
_LONGEST_DOMAIN = 253  # RFC 1035's limit, in characters
_DOMAIN = validate.Email.DOMAIN_REGEX.match


@functools.lru_cache(maxsize=1024)  # a site's addresses share a few domains: gmail.com, its own
def _usual_domain(domain: str) -> bool:
    return domain in validate.Email.DOMAIN_WHITELIST or _DOMAIN(domain) is not None


class EmailAddress(_FastField, ma.Email):
    """marshmallow's ``Email``; ``accepts`` runs its validator's test (same expressions) without the call
    machinery. Takes no validators of its own, which ``accepts`` would not run."""

    def accepts(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        user, at, domain = value.rpartition("@")
        # marshmallow 4.0 also tries the domain's IDNA form (a superset: left to deserialize). A domain longer
        # than DNS allows is left to it too, so the cache holds short strings only.
        return at == "@" and len(domain) <= _LONGEST_DOMAIN and _USER(user) is not None and _usual_domain(domain)


class JsonObject(_FastField, ma.Field[Mapping[str, Any]]):
    """An object with string keys (``details``): what ``Dict(keys=String())`` accepts, with its errors."""

    # Not ClassVar, as ruff's RUF012 asks: marshmallow annotates it as an instance attribute, which a ClassVar
    # may not override. It stays a class attribute: marshmallow merges these along the MRO.
    default_error_messages = {"invalid": "Not a valid mapping type."}  # noqa: RUF012
    _key_field = ma.String()  # only consulted for a key that is not a str, to word the error as marshmallow does

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        errors: dict[Any, dict[str, Any]] = {}
        for key, item in value.items():
            if type(key) is not str:
                self._check_key(key, errors)
            self._check_value(key, item, errors)
        if errors:
            raise ValidationError(errors)
        return value

    def _check_key(self, key: Any, errors: dict[Any, dict[str, Any]]) -> None:
        try:
            self._key_field.deserialize(key)
        except ValidationError as error:
            errors.setdefault(key, {})["key"] = error.messages

    def _check_value(self, key: Any, item: Any, errors: dict[Any, dict[str, Any]]) -> None:
        """Any value may nest in ``details``."""

    def accepts(self, value: Any) -> bool:
        if type(value) is not dict:
            return False
        for key in value:
            if type(key) is not str:
                return False
        return True


class FlatObject(JsonObject):
    """``fields``: Bento stores these on the subscriber, so string, number, boolean or null values only."""

    def _check_value(self, key: Any, item: Any, errors: dict[Any, dict[str, Any]]) -> None:
        if item is not None and not isinstance(item, _SCALARS):
            message = "Must be a string, number, boolean or null; fields cannot be nested."
            errors.setdefault(key, {})["value"] = [message]

    def accepts(self, value: Any) -> bool:
        if type(value) is not dict:
            return False
        for key, item in value.items():
            if type(key) is not str or type(item) not in _JSON_SCALARS:
                return False
        return True


# RFC 3339 section 5.6 date-time, which Bento's OpenAPI description gives for ``date`` (format: date-time):
# date, "T", time, optional fraction, and an offset ("Z" or +hh:mm), "T" and "Z" in either case.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)", re.ASCII)

DATE_EXAMPLE = "2026-12-01T10:00:00Z"
NOT_RFC3339 = (
    f"Not an RFC 3339 date-time with an offset: pass e.g. {DATE_EXAMPLE} or 2026-12-01T10:00:00+02:00, "
    "or an aware datetime."
)
NAIVE_DATETIME = (
    "A datetime without a time zone, so Bento would have to guess it: pass an aware datetime, e.g. "
    f"datetime.now(timezone.utc) or django.utils.timezone.now(), or a string such as {DATE_EXAMPLE}."
)
DATE_WITHOUT_TIME = (
    "A date without a time: pass a datetime with a time zone, e.g. datetime(2026, 12, 1, tzinfo=timezone.utc), "
    "or a string such as 2026-12-01T00:00:00Z."
)


def parse_rfc3339(text: str) -> dt.datetime | None:
    """The aware datetime of an RFC 3339 date-time string, or None if it is not one (or not a real moment).

    The pattern decides the form; ``fromisoformat`` (C, fast) the ranges. Our own stamps take the first
    ``fromisoformat``: ``track()`` pays about 0.3 µs for the check.
    """
    if _RFC3339.fullmatch(text) is None or (text[-1] not in "Zz" and text[-2] > "5"):  # offset minutes 00-59
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        # Before 3.11 fromisoformat reads only isoformat()'s output (no "Z", 3 or 6 fraction digits), and
        # none reads a lower-case "t" or "z": rewrite the same moment in that form.
        fraction = text[20:-6] if text[-1] not in "Zz" else text[20:-1]
        offset = "+00:00" if text[-1] in "Zz" else text[-6:]
        canonical = f"{text[:10]}T{text[11:19]}.{fraction[:6].ljust(6, '0')}{offset}"
        try:
            moment = dt.datetime.fromisoformat(canonical)
        except ValueError:  # 2026-02-30, 25:00, an offset of 24 hours, a leap second
            return None
    if moment.year in (1, 9999):
        try:
            moment.astimezone(dt.timezone.utc)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
            return None
    return moment


def normalize_date(value: Any) -> Any:
    """``date`` in the one form queued: UTC, microseconds, ``+00:00`` (2026-12-01T10:00:00.000000+00:00).

    Anything that is not an aware datetime or an RFC 3339 string comes back unchanged, for
    ``EventDate`` to refuse with the reason.
    """
    moment = parse_rfc3339(value) if isinstance(value, str) else value
    if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
        return value
    try:
        return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    except OverflowError:
        return value


class EventDate(_FastField, ma.Field[str | dt.datetime]):
    """``date``: an RFC 3339 date-time with an offset (or an aware datetime before serialization)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | dt.datetime:
        if isinstance(value, str):
            if parse_rfc3339(value) is not None:
                return value
        elif isinstance(value, dt.datetime):
            if value.utcoffset() is None:
                raise ValidationError(NAIVE_DATETIME)
            return value
        elif isinstance(value, dt.date):
            raise ValidationError(DATE_WITHOUT_TIME)
        raise ValidationError(NOT_RFC3339)

    def accepts(self, value: Any) -> bool:
        return type(value) is str and parse_rfc3339(value) is not None


class EventSchema(Schema):
    class Meta:
        unknown = RAISE

    type = NonEmptyText(required=True)
    email = EmailAddress(required=True)
    # marshmallow's module is imported as ``ma`` because this attribute is named ``fields``
    # Schema also annotates ``fields``, as the instance's dict of bound fields (set in __init__); this class
    # attribute only declares the field, which SchemaMeta collects, so the two never meet at run time.
    fields = FlatObject(allow_none=False)  # type: ignore[assignment]
    details = JsonObject(allow_none=False)
    date = EventDate()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Any: marshmallow fields with the _FastField mixin (mypy cannot name the intersection)
        self._keyed_fields: tuple[tuple[str, Any], ...] = tuple(
            (name if field.data_key is None else field.data_key, field) for name, field in self.load_fields.items()
        )
        self._known_keys = frozenset(key for key, _ in self._keyed_fields)

    def validate(self, data: Any, *, many: bool | None = None, partial: Any = None) -> dict[Any, Any]:
        """marshmallow's ``validate``: the fast loop for the usual case, the full machinery for the rest.

        Equivalent because this schema has no hooks and no nested schemas: loading an event is exactly
        deserializing each field's value (a refused one raises) after refusing unknown keys.
        """
        many = self.many if many is None else many
        events = data if many else (data,)
        fast = partial is None and self.partial is None and self.unknown == RAISE and isinstance(events, Sequence)
        if fast and all(self._accepts(event) for event in events):
            return {}
        return super().validate(data, many=many, partial=partial)

    def _accepts(self, event: Any) -> bool:
        if (type(event) is not dict and not isinstance(event, Mapping)) or not self._known_keys.issuperset(event):
            return False
        for key, field in self._keyed_fields:
            value = event.get(key, missing)
            if value is missing:
                if field.required:
                    return False
            elif not field.accepts(value):
                try:
                    field.deserialize(value, key, event)
                except ValidationError:
                    return False
        return True


class BatchSchema(Schema):
    class Meta:
        unknown = RAISE

    events = ma.List(ma.Nested(EventSchema), required=True, validate=validate.Length(min=1, max=MAX_BATCH_SIZE))


EVENT_SCHEMA = EventSchema()
EVENTS_SCHEMA = EventSchema(many=True)
BATCH_SCHEMA = BatchSchema()
