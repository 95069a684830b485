"""Event and batch schemas: Bento's documented rules, each error naming its field."""

from __future__ import annotations

import pytest

from bento_tasks.schemas import BATCH_SCHEMA, EVENT_SCHEMA
from bento_tasks.testing import EXAMPLE_EVENTS as SEED_EVENTS


def test_seed_examples_are_accepted():
    """The documentation's own request body validates as a batch."""
    assert BATCH_SCHEMA.validate({"events": SEED_EVENTS}) == {}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"email": "a@example.com"}, "type"),
        ({"type": "", "email": "a@example.com"}, "type"),
        ({"type": 3, "email": "a@example.com"}, "type"),
        ({"type": "t"}, "email"),
        ({"type": "t", "email": "not-an-address"}, "email"),
        ({"type": "t", "email": "a@example.com", "fields": {"plan": {"nested": 1}}}, "fields"),
        ({"type": "t", "email": "a@example.com", "fields": {"tags": ["a"]}}, "fields"),
        ({"type": "t", "email": "a@example.com", "fields": "flat?"}, "fields"),
        ({"type": "t", "email": "a@example.com", "details": ["not", "an", "object"]}, "details"),
        ({"type": "t", "email": "a@example.com", "date": "yesterday"}, "date"),
        ({"type": "t", "email": "a@example.com", "user_id": 7}, "user_id"),
    ],
)
def test_event_rules_name_the_field(event, field):
    """Each documented rule refuses the event under the offending field's name."""
    assert field in EVENT_SCHEMA.validate(event)


def test_details_may_nest_and_fields_may_hold_scalars():
    """details nests freely; fields holds strings, numbers, booleans and null."""
    event = {
        "type": "t",
        "email": "a@example.com",
        "fields": {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None},
        "details": {"a": {"b": [1, {"c": None}]}},
        "date": "2024-05-01T10:00:00Z",
    }
    assert EVENT_SCHEMA.validate(event) == {}


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_holds_one_to_a_thousand_events(count):
    """A batch outside 1..1000 events is refused under 'events'."""
    assert "events" in BATCH_SCHEMA.validate({"events": [SEED_EVENTS[0]] * count})


def test_batch_refuses_unknown_keys():
    """Only 'events' is allowed at the top of a batch."""
    assert "extra" in BATCH_SCHEMA.validate({"events": SEED_EVENTS, "extra": 1})
