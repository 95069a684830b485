"""The views' events, checked in memory (bento_outbox) or against the fake Bento (bento_sync).

pytest-django runs each test inside a transaction that is rolled back, so on-commit callbacks
never run by themselves: django_capture_on_commit_callbacks(execute=True) runs them as a commit would.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from shop.models import Order
from shop.views import DECLINED_CARD

pytestmark = pytest.mark.django_db

ORDER = {"email": "jesse@example.com", "sku": "TEA-1", "quantity": 2, "card": "4242424242424242"}


def test_checkout_sends_a_purchase_keyed_by_the_order_once_it_commits(
    client, bento_outbox, django_capture_on_commit_callbacks
):
    """A paid checkout sends one $purchase (key, cents, cart), and only once its transaction commits."""
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/checkout", ORDER)
        assert response.status_code == 201
        assert bento_outbox == []  # not committed yet
    order = Order.objects.get()
    [event] = bento_outbox
    assert event["type"] == "$purchase" and event["email"] == "jesse@example.com"
    assert event["details"] == {
        "unique": {"key": f"order-{order.pk}"},
        "value": {"currency": "USD", "amount": 2500},
        "cart": {"items": [{"product_sku": "TEA-1", "product_name": "Green tea", "quantity": 2}]},
    }


def test_a_declined_card_rolls_back_the_order_and_its_purchase(
    client, bento_outbox, django_capture_on_commit_callbacks
):
    """When the card is declined the order is rolled back, and with it the purchase: nothing is sent."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/checkout", {**ORDER, "card": DECLINED_CARD})
    assert response.status_code == 402
    assert (callbacks, bento_outbox, Order.objects.count()) == ([], [], 0)


def test_signup_subscribes(client, bento_outbox, django_capture_on_commit_callbacks):
    """A signup sends $subscribe with the first name as a field."""
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/signup", {"email": "walter@example.com", "first_name": "Walter"})
    assert [(e["type"], e["email"], e["fields"]) for e in bento_outbox] == [
        ("$subscribe", "walter@example.com", {"first_name": "Walter"})
    ]


def test_signup_reaches_bento_over_http(client, bento_sync, django_capture_on_commit_callbacks):
    """With bento_sync the event is POSTed to the fake Bento (auth, site, JSON) when the transaction commits."""
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/signup", {"email": "walter@example.com", "first_name": "Walter"})
    [event] = bento_sync.events
    assert (event["type"], event["email"]) == ("$subscribe", "walter@example.com")


@pytest.mark.parametrize("email", [None, "", "not-an-address"])
def test_signup_with_a_missing_or_invalid_email_is_a_400_naming_the_field(
    client, bento_outbox, django_capture_on_commit_callbacks, email
):
    """A signup without a usable address answers 400 saying `email` is wrong (InvalidEvent caught), creates no
    user and sends nothing; it used to be a 500."""
    data = {"first_name": "Walter"} if email is None else {"email": email, "first_name": "Walter"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/signup", data)
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["email"]
    assert (bento_outbox, User.objects.count()) == ([], 0)


def test_checkout_with_an_invalid_email_is_a_400_and_rolls_back_the_order(
    client, bento_outbox, django_capture_on_commit_callbacks
):
    """A checkout whose address Bento would refuse answers 400 naming `email`; the order is rolled back."""
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/checkout", {**ORDER, "email": "jesse-at-example"})
    assert response.status_code == 400 and list(response.json()["fields"]) == ["email"]
    assert (bento_outbox, Order.objects.count()) == ([], 0)
