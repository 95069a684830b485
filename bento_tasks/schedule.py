"""The beat entry that runs the flush, added to a project's own Celery app."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .conf import Settings, optional_setting

FLUSH_TASK = "bento_tasks.flush_events"
FLUSH_ENTRY = "bento-flush"


def add_flush_schedule(app: Celery) -> None:
    """Have ``app``'s beat run ``bento_tasks.flush_events`` every BENTO_FLUSH_INTERVAL seconds.

    The interval is read when the app loads its configuration, not now: in a project's celery.py
    Django settings are not loaded yet. An entry named "bento-flush" already in the schedule wins.
    """

    def add(sender: Celery, **kwargs: Any) -> None:
        # In place, as Celery's add_periodic_task does: with namespace="CELERY" an assigned beat_schedule
        # would hide behind the CELERY_BEAT_SCHEDULE setting.
        sender.conf.beat_schedule.setdefault(
            FLUSH_ENTRY,
            {"task": FLUSH_TASK, "schedule": optional_setting("BENTO_FLUSH_INTERVAL", Settings.flush_interval)},
        )

    if app.configured:
        add(app)
    else:
        app.on_after_configure.connect(add, weak=False)
