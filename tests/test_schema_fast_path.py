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
# Addresses at the edges of marshmallow's Email rules, where EmailAddress.accepts must not say yes wrongly:
# quoted and dotted local parts, a whitelisted domain, IDNA and Unicode domains, IP literals, two "@".
addresses = st.sampled_from(
    [
        "a@example.com",
        "b@x.org",
        "A.B+c@Example.COM",
        '"quoted name"@example.com',
        "a..b@example.com",
        ".a@example.com",
        "a@localhost",
        "a@b",
        "a@[127.0.0.1]",
        "a@[300.0.0.1]",
        "a@xn--bcher-kva.example",
        "a@bücher.example",
        "a@例え.テスト",
        "a@-bad.com",
        "a@b@example.com",
        "a@example.com.",
        "@example.com",
        "a@",
        "ü@example.com",
    ]
) | st.builds("{}@{}".format, st.text(max_size=4), st.text(max_size=6))
dates = st.sampled_from(
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01t10:00:00z",
        "2024-05-01T10:00:00.123456789+02:00",
        "2024-05-01T10:00:00+02:60",
        "2024-02-30T10:00:00Z",
        "2024-05-01T24:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "2024-05-01 10:00:00Z",
        "2024-05-01T10:00:00",
    ]
)
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
    {"type": st.sampled_from(["$signup", "t", "", b"t"]) | scalars, "email": addresses | scalars},
    optional={
        "fields": st.dictionaries(keys, scalars, max_size=3) | values,
        "details": st.dictionaries(keys, values, max_size=3) | values,
        "date": dates | scalars,
    },
)
# A valid type and address with doubtful fields, details or date: the verdict turns on those fields' shortcuts.
one_off = st.fixed_dictionaries(
    {"type": st.just("$signup"), "email": st.just("a@example.com")},
    optional={
        "fields": st.dictionaries(keys, values, max_size=3),
        "details": st.dictionaries(keys, values, max_size=3),
        "date": dates,
    },
)
events = st.one_of(valid, near_valid, one_off, st.dictionaries(names, values, max_size=6), values)


@settings(max_examples=400, deadline=None)
@given(events)
def test_one_event_gets_the_reference_verdict_and_errors(event):
    assert EVENT_SCHEMA.validate(event) == REFERENCE.validate(event)


@settings(max_examples=400, deadline=None)
@given(one_off)
def test_each_fields_shortcut_gets_the_reference_verdict(event):
    """Each field's ``accepts`` says yes only where marshmallow's field accepts (the rest of the event is valid)."""
    assert EVENT_SCHEMA.validate(event) == REFERENCE.validate(event)


class _Text(str):
    pass


class _Object(dict):
    pass


# Values of the types each shortcut looks at, their subclasses, and the rest.
field_values = st.one_of(
    values,
    addresses,
    dates,
    st.sampled_from(["", "t", b"t", _Text("a@example.com"), _Text("2024-05-01T10:00:00Z")]),
    st.dictionaries(keys, values, max_size=3).map(_Object),
)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(EVENT_SCHEMA.fields)), field_values)
def test_a_field_says_yes_only_to_what_it_returns_unchanged(name, value):
    """Each field's ``accepts`` says yes only where ``deserialize`` takes the value and returns it as it is."""
    field = EVENT_SCHEMA.fields[name]
    if field.accepts(value):
        assert field.deserialize(value) is value


def test_the_shortcuts_run_every_validator_their_fields_have():
    """``accepts`` repeats each field's validators: a validator added to a field must come with a new shortcut."""
    kinds = {name: [type(v) for v in field.validators] for name, field in EVENT_SCHEMA.fields.items()}
    assert kinds == {
        "type": [validate.Length],
        "email": [validate.Email],
        "fields": [],
        "details": [],
        "date": [],
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(events, max_size=5))
def test_a_batch_gets_the_reference_errors_by_index(batch):
    assert EVENTS_SCHEMA.validate(batch) == REFERENCE.validate(batch, many=True)


def test_the_fast_path_relies_on_a_schema_without_hooks():
    """validate() skips marshmallow's hook machinery: a hook added to EventSchema must come with a new design."""
    assert not any(EventSchema._hooks.values())
