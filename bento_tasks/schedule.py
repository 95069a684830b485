"""The beat entries that run the flush (and the outbox relay), added to a project's own Celery app."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .conf import Settings, optional_setting

FLUSH_TASK = "bento_tasks.flush_events"
FLUSH_ENTRY = "bento-flush"
RELAY_TASK = "bento_tasks.relay_outbox"
RELAY_ENTRY = "bento-relay"


def add_flush_schedule(app: Celery) -> None:
    """Have ``app``'s beat run ``bento_tasks.flush_events`` every BENTO_FLUSH_INTERVAL seconds, and with
    BENTO_OUTBOX on, ``bento_tasks.relay_outbox`` as often.

    The settings are read when the app loads its configuration, not now: in a project's celery.py
    Django settings are not loaded yet. Entries named "bento-flush" or "bento-relay" already in the
    schedule win.
    """

    def add(sender: Celery, **kwargs: Any) -> None:
        # In place, as Celery's add_periodic_task does: with namespace="CELERY" an assigned beat_schedule
        # would hide behind the CELERY_BEAT_SCHEDULE setting.
        interval = optional_setting("BENTO_FLUSH_INTERVAL", Settings.flush_interval)
        sender.conf.beat_schedule.setdefault(FLUSH_ENTRY, {"task": FLUSH_TASK, "schedule": interval})
        if optional_setting("BENTO_OUTBOX", Settings.outbox):
            sender.conf.beat_schedule.setdefault(RELAY_ENTRY, {"task": RELAY_TASK, "schedule": interval})

    if app.configured:  # type: ignore[attr-defined]  # set in Celery.__init__; celery-types omits it
        add(app)
    else:
        app.on_after_configure.connect(add, weak=False)
