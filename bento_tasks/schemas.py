"""Marshmallow schemas of a Bento event and a batch, as Bento's API documentation describes them.

Every event goes through ``EventSchema`` twice (``track()``, then ``post_batch`` before the POST), so it
is built for speed (profiled: marshmallow's machinery, not the checks themselves, was most of the
worker's CPU time; see bench/RESULTS.md):

- each field checks a whole value in one call, where ``Dict(keys=..., values=...)`` would make two
  field calls per entry, and builds its validator chain once, not per value;
- ``EventSchema.validate`` runs the same marshmallow fields over each event in a fixed loop instead of
  the generic ``Schema`` machinery (partial loading, hooks, error stores), and falls back to that
  machinery whenever an event is refused, so errors are exactly marshmallow's.

Errors keep the layout marshmallow's own fields give (``{"fields": {"plan": {"value": [...]}}}``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, missing, validate
from marshmallow import fields as ma

from .conf import MAX_BATCH_SIZE

# Values that serialize to a JSON scalar: what a flat ``fields`` object may hold.
_SCALARS = (str, int, float, bool, dt.date, decimal.Decimal, uuid.UUID)


class _ValidatorsOnce:
    """Mixin: marshmallow 4 wraps a field's validators in a new ``And`` for every value; wrap them once,
    and skip the call for a field that has none."""

    validators: list[Callable[[Any], Any]]

    @functools.cached_property
    def _validate_all(self) -> Callable[[Any], Any]:
        return validate.And(*self.validators)

    def _validate(self, value: Any) -> None:
        if self.validators:
            self._validate_all(value)


class Text(_ValidatorsOnce, ma.String):
    pass


class EmailAddress(_ValidatorsOnce, ma.Email):
    pass


class JsonObject(_ValidatorsOnce, ma.Field):
    """An object with string keys (``details``): what ``Dict(keys=String())`` accepts, with its errors."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "Not a valid mapping type."}
    _key_field = ma.String()  # only consulted for a key that is not a str, to word the error as marshmallow does

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
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


class FlatObject(JsonObject):
    """``fields``: Bento stores these on the subscriber, so string, number, boolean or null values only."""

    def _check_value(self, key: Any, item: Any, errors: dict[Any, dict[str, Any]]) -> None:
        if item is not None and not isinstance(item, _SCALARS):
            message = "Must be a string, number, boolean or null; fields cannot be nested."
            errors.setdefault(key, {})["value"] = [message]


class EventDate(_ValidatorsOnce, ma.Field):
    """``date`` as an ISO 8601 string (or a datetime before serialization) that backdates the event."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
        raise ValidationError("Not a valid ISO 8601 date-time.")


class EventSchema(Schema):
    class Meta:
        unknown = RAISE

    type = Text(required=True, validate=validate.Length(min=1))
    email = EmailAddress(required=True)
    # marshmallow's module is imported as ``ma`` because this attribute is named ``fields``
    fields = FlatObject(allow_none=False)
    details = JsonObject(allow_none=False)
    date = EventDate()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keyed_fields = tuple(
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
        if not isinstance(event, Mapping) or not self._known_keys.issuperset(event):
            return False
        try:
            for key, field in self._keyed_fields:
                field.deserialize(event.get(key, missing), key, event)
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
