"""The fast event schema accepts and refuses exactly what a plain marshmallow schema does, with the same errors."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import RAISE, Schema, validate
from marshmallow import fields as ma

from bento_tasks.schemas import _SCALARS as SCALARS
from bento_tasks.schemas import EVENT_SCHEMA, EVENTS_SCHEMA, EventDate, EventSchema


class _FlatValue(ma.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, SCALARS):
            return value
        raise ma.ValidationError("Must be a string, number, boolean or null; fields cannot be nested.")


class ReferenceSchema(Schema):
    """The event schema written the obvious way, run by marshmallow's generic machinery."""

    class Meta:
        unknown = RAISE

    type = ma.String(required=True, validate=validate.Length(min=1))
    email = ma.Email(required=True)
    fields = ma.Dict(keys=ma.String(), values=_FlatValue(allow_none=True), allow_none=False)
    details = ma.Dict(keys=ma.String(), allow_none=False)
    date = EventDate()


REFERENCE = ReferenceSchema()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["a@example.com", "not-an-address", "", "2024-05-01T10:00:00Z", "yesterday"]),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
)
keys = st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3))
names = st.sampled_from(["type", "email", "fields", "details", "date", "extra"])
# Valid and nearly valid events, so the fast path's acceptances are exercised as much as its refusals.
valid = st.fixed_dictionaries(
    {"type": st.sampled_from(["$signup", "t"]), "email": st.sampled_from(["a@example.com", "b@x.org"])},
    optional={
        "fields": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
        "details": st.dictionaries(st.text(max_size=5), values, max_size=3),
        "date": st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123+02:00"]),
    },
)
near_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(["$signup", "t"]) | scalars, "email": st.sampled_from(["a@example.com", "b@x.org"])},
    optional={
        "fields": st.dictionaries(keys, scalars, max_size=3) | values,
        "details": st.dictionaries(st.text(max_size=5), values, max_size=3) | values,
        "date": st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01"]) | scalars,
    },
)
events = st.one_of(valid, near_valid, st.dictionaries(names, values, max_size=6), values)


@settings(max_examples=400, deadline=None)
@given(events)
def test_one_event_gets_the_reference_verdict_and_errors(event):
    assert EVENT_SCHEMA.validate(event) == REFERENCE.validate(event)


@settings(max_examples=200, deadline=None)
@given(st.lists(events, max_size=5))
def test_a_batch_gets_the_reference_errors_by_index(batch):
    assert EVENTS_SCHEMA.validate(batch) == REFERENCE.validate(batch, many=True)


def test_the_fast_path_relies_on_a_schema_without_hooks():
    """validate() skips marshmallow's hook machinery: a hook added to EventSchema must come with a new design."""
    assert not any(EventSchema._hooks.values())
