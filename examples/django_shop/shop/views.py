"""A checkout that records a purchase and a signup that subscribes, each sent to Bento only on commit."""

from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

import bento_tasks

from .models import Order

PRODUCTS = {"TEA-1": ("Green tea", 1250)}  # sku: (name, price in cents)
DECLINED_CARD = "4000000000000002"


class CardDeclined(Exception):
    pass


def charge(order: Order, card: str) -> None:
    """Stands in for a payment provider: one test card number is declined."""
    if card == DECLINED_CARD:
        raise CardDeclined(order.pk)


def invalid(exc: bento_tasks.InvalidEvent) -> JsonResponse:
    """A 400 naming what is wrong with the event (e.g. {"email": ["Not a valid email address."]})."""
    return JsonResponse({"error": str(exc), "fields": exc.errors}, status=400)


@require_POST
def checkout(request: HttpRequest) -> JsonResponse:
    email, sku = request.POST.get("email", ""), request.POST.get("sku", "")
    quantity = int(request.POST.get("quantity", 1))
    if sku not in PRODUCTS:
        return JsonResponse({"error": "unknown sku"}, status=400)
    name, price = PRODUCTS[sku]
    try:
        with transaction.atomic():
            order = Order.objects.create(
                email=email, sku=sku, quantity=quantity, amount=price * quantity, currency="USD"
            )
            # Written into the outbox in this transaction (BENTO_OUTBOX), relayed to Redis once it commits;
            # a declined card below rolls back order and event alike.
            bento_tasks.purchase(
                email,
                unique_key=f"order-{order.pk}",  # Bento counts a resent purchase with this key once
                amount=order.amount,
                currency=order.currency,
                cart={"items": [{"product_sku": sku, "product_name": name, "quantity": quantity}]},
                on_commit=True,
            )
            charge(order, request.POST.get("card", ""))
    except bento_tasks.InvalidEvent as exc:  # a bad address: the order is rolled back with its event
        return invalid(exc)
    except CardDeclined:
        return JsonResponse({"error": "card declined"}, status=402)
    return JsonResponse({"order": order.pk}, status=201)


@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email, first_name = request.POST.get("email", ""), request.POST.get("first_name", "")
    try:
        with transaction.atomic():
            # Validated now and queued at commit: a bad address raises before the user row is written.
            bento_tasks.subscribe(email, fields={"first_name": first_name}, on_commit=True)
            user = User.objects.create_user(username=email, email=email, first_name=first_name)
    except bento_tasks.InvalidEvent as exc:
        return invalid(exc)
    return JsonResponse({"user": user.pk}, status=201)
