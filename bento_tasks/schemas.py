"""Marshmallow schemas of a Bento event and a batch, as Bento's API documentation describes them."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as ma

from .conf import MAX_BATCH_SIZE

# Values that serialize to a JSON scalar: what a flat ``fields`` object may hold.
_SCALARS = (str, int, float, bool, dt.date, decimal.Decimal, uuid.UUID)


class FlatValue(ma.Field):
    """A ``fields`` value: Bento stores these on the subscriber, so no objects or arrays."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is None or isinstance(value, _SCALARS):
            return value
        raise ValidationError("Must be a string, number, boolean or null; fields cannot be nested.")


class EventDate(ma.Field):
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

    type = ma.String(required=True, validate=validate.Length(min=1))
    email = ma.Email(required=True)
    # marshmallow's module is imported as ``ma`` because this attribute is named ``fields``
    fields = ma.Dict(keys=ma.String(), values=FlatValue(allow_none=True), allow_none=False)
    details = ma.Dict(keys=ma.String(), allow_none=False)
    date = EventDate()


class BatchSchema(Schema):
    class Meta:
        unknown = RAISE

    events = ma.List(ma.Nested(EventSchema), required=True, validate=validate.Length(min=1, max=MAX_BATCH_SIZE))


EVENT_SCHEMA = EventSchema()
EVENTS_SCHEMA = EventSchema(many=True)
BATCH_SCHEMA = BatchSchema()
