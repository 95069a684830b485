"""Baseline: the naive way, one Celery task and one HTTP POST per event (same broker, same fake Bento).

Run as ``celery -A bench.naive worker``. Each event is validated and encoded as ``track()`` does and
posted with the package's own HTTP client, so the only difference measured is one request per event.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from bento_tasks.client import Verdict, post_events
from bento_tasks.conf import get_settings
from bento_tasks.events import build_event, encode_event

app = Celery("bench-naive")
app.config_from_object("celeryconfig")


@app.task(name="bench.naive.post_one", ignore_result=True)
def post_one(type: str, email: str, fields: Any = None, details: Any = None, date: Any = None) -> None:
    settings = get_settings()
    raw = encode_event(build_event(type, email, fields, details, date), settings.max_event_bytes)
    outcome = post_events(settings, [raw])
    if outcome.verdict is not Verdict.DELIVERED:
        raise RuntimeError(f"naive post failed: {outcome.status} {outcome.detail}")
