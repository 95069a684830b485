"""System checks run by ``manage.py check``: each message names the setting and the exact fix.

Missing keys are warnings, as Django's own deployment checks are: a developer without Bento keys
can still migrate and run the server. Values that are wrong everywhere are errors.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from celery.schedules import maybe_schedule
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning

from . import conf
from .exceptions import ConfigurationError
from .policy import dispatch_room
from .schedule import FLUSH_ENTRY, FLUSH_TASK, RELAY_ENTRY, RELAY_TASK

_REQUIRED = {
    "BENTO_SITE_UUID": "your site UUID",
    "BENTO_PUBLISHABLE_KEY": "your publishable key",
    "BENTO_SECRET_KEY": "your secret key",
}


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The bento_tasks checks; the beat schedule is checked once the settings themselves are valid."""
    problems = [*_missing(), *_batch_size(), *_api_url()]
    if problems:
        return problems
    try:
        settings = conf.resolve_settings()
    except ConfigurationError as exc:
        hint = "Correct or remove that setting; the bento-tasks README lists every setting with its default."
        return [Error(str(exc), hint=hint, id="bento_tasks.E003")]
    return [*_beat(settings), *_outbox(settings, kwargs.get("databases"))]


def _missing() -> list[CheckMessage]:
    return [
        Warning(
            f"{name} is not set: bento_tasks cannot send anything to Bento.",
            hint=f'Add {name} = os.environ["{name}"] to settings.py and set that variable to {what} '
            "(Bento: Settings > API keys).",
            id="bento_tasks.W001",
        )
        for name, what in _REQUIRED.items()
        if not conf._lookup(name, django_settings)
    ]


def _batch_size() -> list[CheckMessage]:
    value = conf._lookup("BENTO_BATCH_SIZE", django_settings)
    try:
        size = conf.MAX_BATCH_SIZE if value is None else int(value)
    except (TypeError, ValueError):
        return []  # not a number: resolve_settings() names it (E003)
    if 1 <= size <= conf.MAX_BATCH_SIZE:
        return []
    return [
        Error(
            f"BENTO_BATCH_SIZE is {size}: Bento accepts 1 to {conf.MAX_BATCH_SIZE} events per request.",
            hint=f"Set BENTO_BATCH_SIZE = {conf.MAX_BATCH_SIZE} (the default), or remove it.",
            id="bento_tasks.E001",
        )
    ]


def _api_url() -> list[CheckMessage]:
    url = conf._lookup("BENTO_API_URL", django_settings)
    try:
        conf._check_url(str(url or conf.Settings.api_url))
    except ConfigurationError:
        return [
            Error(
                f"BENTO_API_URL {url!r} is not an https:// URL: the secret key would travel in clear text.",
                hint=f'Set BENTO_API_URL = "{conf.Settings.api_url}" (the default), or remove it; '
                "http:// is accepted only for loopback hosts such as a test fake.",
                id="bento_tasks.E002",
            )
        ]
    return []


def _beat(settings: conf.Settings) -> list[CheckMessage]:
    entries = [entry for entry in _beat_entries() if isinstance(entry, dict) and entry.get("task") == FLUSH_TASK]
    if not entries:
        return [
            Warning(
                f"The Celery beat schedule has no entry for {FLUSH_TASK}: queued events are never sent to Bento.",
                hint=f'Add "{FLUSH_ENTRY}": {{"task": "{FLUSH_TASK}", "schedule": {settings.flush_interval:g}}} '
                "to CELERY_BEAT_SCHEDULE, or call bento_tasks.add_flush_schedule(app) in your celery.py. "
                'If django-celery-beat keeps this schedule in the database instead, add "bento_tasks.W002" '
                "to SILENCED_SYSTEM_CHECKS.",
                id="bento_tasks.W002",
            )
        ]
    if settings.rate_limit == 0:
        return []
    period = min(_period(entry["schedule"]) for entry in entries)
    # Each flush dispatches up to two ticks' worth of BENTO_FLUSH_INTERVAL's share of the rate limit;
    # a beat slower than that interval leaves the rest of the limit unused.
    per_flush = dispatch_room(settings, 0)
    per_minute = per_flush * 60 / period
    if per_minute >= settings.rate_limit:
        return []
    return [
        Warning(
            f"Beat runs {FLUSH_TASK} every {period:g}s but BENTO_FLUSH_INTERVAL is {settings.flush_interval:g}s: "
            f"each flush dispatches at most {per_flush} batches, {per_minute:.0f} a minute, below BENTO_RATE_LIMIT "
            f"({settings.rate_limit} a minute), so a backlog drains slower than Bento allows.",
            hint=f'Give the beat entry "schedule": {settings.flush_interval:g} (or use '
            f"bento_tasks.add_flush_schedule(app)), or set BENTO_FLUSH_INTERVAL = {period:g} to match the schedule.",
            id="bento_tasks.W003",
        )
    ]


def _outbox(settings: conf.Settings, databases: Any) -> list[CheckMessage]:
    """With BENTO_OUTBOX on: the table must exist (else every on-commit send fails) and beat must relay."""
    if not settings.outbox:
        return []
    from django.db import DEFAULT_DB_ALIAS, DatabaseError

    from . import outbox

    problems: list[CheckMessage] = []
    # The database is read here even without --database: a missing table breaks every checkout. One that
    # cannot be reached says nothing; migrate and runserver report that themselves.
    for alias in databases or [DEFAULT_DB_ALIAS]:
        try:
            missing = not outbox.has_table(alias)
        except DatabaseError:
            continue
        if missing:
            problems.append(
                Warning(
                    f"BENTO_OUTBOX is on but the {outbox.TABLE} table does not exist on database {alias!r}: "
                    "send_event_on_commit() and on_commit=True helpers will fail.",
                    hint=f"Run: python manage.py migrate bento_tasks --database {alias}",
                    id="bento_tasks.W010",
                )
            )
    if not any(isinstance(entry, dict) and entry.get("task") == RELAY_TASK for entry in _beat_entries()):
        problems.append(
            Warning(
                f"BENTO_OUTBOX is on but the Celery beat schedule has no entry for {RELAY_TASK}: events left in "
                "the outbox table (Redis was down at commit, a process died) are never relayed.",
                hint=f'Add "{RELAY_ENTRY}": {{"task": "{RELAY_TASK}", "schedule": {settings.flush_interval:g}}} '
                "to CELERY_BEAT_SCHEDULE, or call bento_tasks.add_flush_schedule(app) in your celery.py. "
                'If django-celery-beat keeps this schedule in the database instead, add "bento_tasks.W011" '
                "to SILENCED_SYSTEM_CHECKS.",
                id="bento_tasks.W011",
            )
        )
    return problems


def _beat_entries() -> list[Any]:
    # The project's Celery app sees CELERY_BEAT_SCHEDULE and add_flush_schedule(); the setting is
    # read as well in case that app is not imported by the settings package in this process.
    setting = getattr(django_settings, "CELERY_BEAT_SCHEDULE", None) or {}
    return [*setting.values(), *current_app.conf.beat_schedule.values()]


def _period(schedule: Any) -> float:
    run_every = getattr(maybe_schedule(schedule), "run_every", None)
    # crontab and solar schedules have no fixed period; they fire at most once a minute.
    return run_every.total_seconds() if run_every is not None else 60.0
