"""Bento's well-known events in the shape Bento documents, and sending an event after commit.

Each helper validates its own part with marshmallow (raising ``InvalidEvent`` naming the field,
e.g. ``details.value.amount``), then goes through ``track()``, or with ``on_commit=True``
through ``send_event_on_commit()`` (and so the outbox, with ``BENTO_OUTBOX``). Django is imported
only by ``send_event_on_commit``, through ``bento_tasks.outbox`` (the one module that speaks the ORM).
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as ma

from .api import enqueue, track
from .conf import get_settings
from .events import build_event, encode_event
from .exceptions import InvalidEvent

Date = dt.datetime | str | None


def send_event_on_commit(
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    date: Date = None,
    *,
    using: str | None = None,
) -> None:
    """Queue an event once the current Django transaction (on database ``using``) commits; never if it rolls back.

    The event is validated and stamped now (``InvalidEvent`` here, not at commit). With ``BENTO_OUTBOX``
    it is written into the outbox table in this transaction, and relayed to Redis after commit without
    touching Redis here. Without it, ``transaction.on_commit`` pushes it to Redis like ``track()`` would
    (outside a transaction at once), and ``BufferUnavailable`` propagates from the commit if Redis is down.
    The ``BENTO_DELIVERY`` test modes always take the second way.
    """
    from . import outbox

    settings = get_settings()
    raw = encode_event(build_event(type, email, fields, details, date), settings.max_event_bytes)
    if settings.outbox and settings.delivery == "redis":
        outbox.write(raw, using)
        return
    outbox.on_commit(partial(enqueue, raw), using)


class _UniqueKey(ma.Field[str | int]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise ValidationError("Must be a non-empty string or an integer, such as the order id.")
        return value


class _Unique(Schema):
    key = _UniqueKey(required=True)


class _Value(Schema):
    currency = ma.String(
        required=True, validate=validate.Regexp(r"^[A-Z]{3}$", error="Must be a 3-letter ISO 4217 code such as USD.")
    )
    amount = ma.Integer(
        required=True, strict=True, error_messages={"invalid": "Must be a whole number of cents, e.g. 1999 for 19.99."}
    )


class _Cart(Schema):
    class Meta:
        unknown = RAISE

    items = ma.List(ma.Dict(keys=ma.String()))
    abandoned_checkout_url = ma.String()


class _PurchaseDetails(Schema):
    class Meta:
        unknown = RAISE

    unique = ma.Nested(_Unique, required=True)
    value = ma.Nested(_Value, required=True)
    cart = ma.Nested(_Cart)


class _TagDetails(Schema):
    tag = ma.String(required=True, validate=validate.Length(min=1))


_PURCHASE = _PurchaseDetails()
_TAG = _TagDetails()


def _paths(errors: dict[Any, Any], prefix: str) -> dict[str, list[str]]:
    # Not exceptions.flatten_errors: that one folds the "key"/"value" levels of Dict errors, which
    # here are real field names (details.unique.key, details.value.amount).
    flat: dict[str, list[str]] = {}
    for name, value in errors.items():
        path = f"{prefix}.{name}"
        flat.update(_paths(value, path) if isinstance(value, dict) else {path: value})
    return flat


def _checked(schema: Schema, details: dict[str, Any]) -> dict[str, Any]:
    errors = schema.validate(details)
    if errors:
        raise InvalidEvent(_paths(errors, "details"))
    return details


def _send(
    type: str,
    email: str,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    *,
    date: Date,
    on_commit: bool,
    using: str | None,
) -> None:
    if on_commit:
        send_event_on_commit(type, email, fields, details, date, using=using)
    elif using is not None:
        # Without on_commit the event goes to Redis now: no transaction to join, so say so rather than ignore it.
        raise TypeError(f"using={using!r} names the database whose transaction the event joins: pass on_commit=True")
    else:
        track(type, email, fields, details, date)


def purchase(
    email: str,
    unique_key: str | int,
    amount: int,
    currency: str,
    cart: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    *,
    date: Date = None,
    on_commit: bool = False,
    using: str | None = None,
) -> None:
    """``$purchase`` of ``amount`` cents; Bento counts a retried purchase with the same ``unique_key`` once.

    ``cart`` is ``{"items": [{"product_sku": ..., "product_name": ..., "quantity": ...}],
    "abandoned_checkout_url": ...}``, both keys optional.
    """
    details: dict[str, Any] = {"unique": {"key": unique_key}, "value": {"currency": currency, "amount": amount}}
    if cart is not None:
        details["cart"] = cart
    _send("$purchase", email, fields, _checked(_PURCHASE, details), date=date, on_commit=on_commit, using=using)


def subscribe(
    email: str,
    fields: dict[str, Any] | None = None,
    *,
    date: Date = None,
    on_commit: bool = False,
    using: str | None = None,
) -> None:
    """``$subscribe``: add (or re-subscribe) the subscriber, setting ``fields`` on them."""
    _send("$subscribe", email, fields, date=date, on_commit=on_commit, using=using)


def unsubscribe(email: str, *, date: Date = None, on_commit: bool = False, using: str | None = None) -> None:
    """``$unsubscribe``: stop marketing emails to the subscriber."""
    _send("$unsubscribe", email, date=date, on_commit=on_commit, using=using)


def tag(email: str, tag: str, *, date: Date = None, on_commit: bool = False, using: str | None = None) -> None:
    """``$tag``: add ``tag`` to the subscriber (created if new); runs Bento's tag automations."""
    _send("$tag", email, details=_checked(_TAG, {"tag": tag}), date=date, on_commit=on_commit, using=using)


def remove_tag(email: str, tag: str, *, date: Date = None, on_commit: bool = False, using: str | None = None) -> None:
    """``$remove_tag``: remove ``tag`` from the subscriber."""
    _send("$remove_tag", email, details=_checked(_TAG, {"tag": tag}), date=date, on_commit=on_commit, using=using)


def update_fields(
    email: str, fields: dict[str, Any], *, date: Date = None, on_commit: bool = False, using: str | None = None
) -> None:
    """``$update_fields``: set custom ``fields`` (a flat object) on the subscriber."""
    if not fields:
        raise InvalidEvent({"fields": ["Give at least one field to update."]})
    _send("$update_fields", email, fields, date=date, on_commit=on_commit, using=using)
