"""Building and encoding events, and the flush's check of raw queue entries: pure functions."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import pickle
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bento_tasks.events import _decode, _decode_entry, build_event, encode_event, mask_email, split_valid
from bento_tasks.exceptions import InvalidEvent

LIMIT = 64 * 1024


def test_missing_date_is_stamped_with_the_call_time():
    """An event without a date carries the time it was built, in UTC."""
    before = dt.datetime.now(dt.timezone.utc)
    event = json.loads(encode_event(build_event("t", "a@example.com"), LIMIT))
    assert before <= dt.datetime.fromisoformat(event["date"]) <= dt.datetime.now(dt.timezone.utc)


def test_given_date_is_kept():
    """A caller's date backdates the event and is not replaced (only written in the one queued form)."""
    event = json.loads(encode_event(build_event("t", "a@example.com", date="2024-01-02T03:04:05+00:00"), LIMIT))
    assert event["date"] == "2024-01-02T03:04:05.000000+00:00"


@pytest.mark.parametrize(
    ("date", "queued"),
    [
        ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.000000+00:00"),
        ("2026-12-01t10:00:00.5z", "2026-12-01T10:00:00.500000+00:00"),
        ("2026-12-01T12:30:00+02:30", "2026-12-01T10:00:00.000000+00:00"),
        ("2026-12-01T05:00:00.1234567-05:00", "2026-12-01T10:00:00.123456+00:00"),
        (dt.datetime(2026, 12, 1, 11, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2026-12-01T10:00:00.000000+00:00"),
        (dt.datetime(2026, 12, 1, 10, 0, 0, 42, tzinfo=dt.timezone.utc), "2026-12-01T10:00:00.000042+00:00"),
    ],
)
def test_dates_are_queued_as_utc_rfc3339(date, queued):
    """Aware datetimes and RFC 3339 strings are queued in one form: UTC, microseconds, +00:00."""
    event = json.loads(encode_event(build_event("t", "a@example.com", date=date), LIMIT))
    assert event["date"] == queued


@pytest.mark.parametrize(
    ("date", "says"),
    [
        ("2026-12-01", "RFC 3339"),
        (dt.date(2026, 12, 1), "A date without a time"),
        (dt.datetime(2026, 12, 1, 10, 0), "without a time zone"),
        ("20261201T100000", "RFC 3339"),
        ("2026-W48-2", "RFC 3339"),
        ("2026-12-01 10:00:00", "RFC 3339"),
        ("2026-12-01T10:00:00", "RFC 3339"),
        ("2026-12-01T10:00:00+0200", "RFC 3339"),
        ("2026-02-30T10:00:00Z", "RFC 3339"),
        (1764583200, "RFC 3339"),
    ],
)
def test_dates_bento_does_not_define_are_refused_naming_date(date, says):
    """A naive datetime, a date without a time and ISO 8601 forms outside RFC 3339 raise InvalidEvent naming
    `date` and saying what to pass, instead of being queued as given."""
    with pytest.raises(InvalidEvent) as raised:
        encode_event(build_event("t", "a@example.com", date=date), LIMIT)
    assert list(raised.value.errors) == ["date"]
    assert says in str(raised.value) and "2026-12-01T" in str(raised.value)


def test_raw_entries_with_such_dates_are_dead_lettered():
    """Another producer's raw entries with a date outside RFC 3339 are refused before a POST; RFC 3339 passes."""
    good = [b'{"type":"t","email":"a@example.com","date":"2026-12-01T10:00:00Z"}']
    bad = [
        b'{"type":"t","email":"a@example.com","date":"2026-12-01"}',
        b'{"type":"t","email":"a@example.com","date":"2026-12-01 10:00:00"}',
        b'{"type":"t","email":"a@example.com","date":"2026-12-01T10:00:00"}',
    ]
    valid, rejected = split_valid(good + bad, LIMIT)
    assert valid == good
    assert [entry for entry, _ in rejected] == bad
    assert all("date" in reason for _, reason in rejected)


def test_python_values_are_serialized_as_iso_and_strings():
    """datetime, date, Decimal and UUID in fields/details become ISO 8601 or plain strings."""
    order = uuid.UUID("12345678-1234-5678-1234-567812345678")
    event = build_event(
        "$purchase",
        "a@example.com",
        fields={"since": dt.date(2024, 1, 2), "ltv": decimal.Decimal("12.50")},
        details={"order": order, "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)},
        date=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )
    decoded = json.loads(encode_event(event, LIMIT))
    assert decoded["fields"] == {"since": "2024-01-02", "ltv": "12.50"}
    assert decoded["details"] == {"order": str(order), "at": "2024-01-02T03:04:05+00:00"}
    assert decoded["date"] == "2024-01-02T03:04:05.000000+00:00"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"fields": {"plan": {"tier": 1}}}, "fields.plan"),
        ({"details": {"tags": {1, 2}}}, "details.tags"),
        ({"details": {"score": [1.0, float("nan")]}}, "details.score.1"),
        ({"details": {"text": "\ud800"}}, "details.text"),
        ({"details": {"blob": "x" * LIMIT}}, "_event"),
    ],
)
def test_encode_refuses_bad_events_naming_the_field(kwargs, field):
    """InvalidEvent is a ValueError whose errors and message name the offending field."""
    args = {"type": "t", "email": "a@example.com", **kwargs}
    with pytest.raises(InvalidEvent) as raised:
        encode_event(build_event(**args), LIMIT)
    assert isinstance(raised.value, ValueError)
    assert field in raised.value.errors
    assert field in str(raised.value)


def test_split_valid_keeps_valid_entries_byte_for_byte():
    """Valid raw entries pass unchanged; each invalid one comes back with a reason."""
    good = b'{"type":"t","email":"a@example.com"}'
    entries = [
        good,
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"type":"t","email":"bad"}',
        b"x" * (LIMIT + 1),
        b'{"type":"t","email":"a@example.com","details":{"score":NaN}}',
    ]
    valid, rejected = split_valid(entries, LIMIT)
    assert valid == [good]
    reasons = dict(rejected)
    assert set(reasons) == set(entries[1:])
    assert "email" in reasons[entries[3]]
    assert "BENTO_MAX_EVENT_BYTES" in reasons[entries[4]]
    assert "NaN" in reasons[entries[5]]


def _outcome(decode, text):
    try:
        return "value", decode(text)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc)


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
).map(lambda value: json.dumps(value, separators=(",", ":")))
# Valid JSON, then the same cut short, padded, doubled or joined: where a scan from the start could stop early.
entries = json_texts | st.builds(
    lambda text, cut, pad: (pad + text[:cut] + pad, text + "," + text, text + text)[cut % 3],
    json_texts,
    st.integers(0, 20),
    st.sampled_from(["", " ", "\n", "\t "]),
)


@settings(max_examples=500, deadline=None)
@given(entries)
def test_an_entry_decodes_as_the_plain_decoder_would(text):
    """The scanner shortcut gives exactly the plain decoder's value, or fails where it fails."""
    assert _outcome(_decode_entry, text) == _outcome(_decode, text)


def test_mask_email_hides_the_local_part():
    """Log lines show j***@example.com unless masking is off."""

    class Settings:
        mask_emails = True

    assert mask_email("jesse@example.com", Settings) == "j***@example.com"
    Settings.mask_emails = False
    assert mask_email("jesse@example.com", Settings) == "jesse@example.com"


def test_invalid_event_survives_pickling():
    """InvalidEvent crosses process boundaries as Celery pickles it (prefork pool, Reject, result backends)."""
    error = InvalidEvent({"email": ["Not a valid email address."]})
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.errors, str(copy)) == (InvalidEvent, error.errors, str(error))
