"""``path("bento/", include("bento_tasks.urls"))``: ``bento/metrics`` (URL name ``bento_tasks:metrics``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "bento_tasks"
urlpatterns = [path("metrics", views.metrics, name="metrics")]
