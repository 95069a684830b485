"""System checks run by ``manage.py check``: each message names the setting and the exact fix.

The settings problems come from ``conf.resolve()``, one message each (W001 missing key, E001 batch
size, E002 API URL scheme, E003 any other refused value, W004 environment variable Django settings do
not use, W005 unknown name, W006 API URL that is not an API base); then the beat schedule (W002, W003),
Redis's maxmemory-policy (E004) and, with BENTO_OUTBOX on, the outbox table and its relay (W010, W011).
Missing keys are warnings, as Django's own deployment checks are: a developer without Bento keys
can still migrate and run the server. Values that are wrong everywhere are errors.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from celery import Celery, current_app
from celery.schedules import maybe_schedule
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning

from . import conf
from .buffer import probe_memory_policy
from .exceptions import BufferUnavailable
from .policy import dispatch_room
from .schedule import FLUSH_ENTRY, FLUSH_TASK, RELAY_ENTRY, RELAY_TASK


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The bento_tasks checks, each problem its own message; the beat schedule once the settings are valid."""
    resolution = conf.resolve()
    settings = resolution.settings
    # The outbox test mode never POSTs, so it needs no keys.
    keys = resolution.missing_keys if settings is None or settings.delivery != "outbox" else ()
    messages: list[CheckMessage] = [_message(Warning, problem) for problem in keys]
    messages += [_message(Error, problem) for problem in resolution.errors]
    messages += [_message(Warning, problem) for problem in resolution.warnings]
    if settings is not None:
        messages += [
            *_beat(settings, resolution.module),
            *_redis_memory(settings),
            *_outbox(settings, kwargs.get("databases")),
        ]
    return messages


def _message(kind: type[Warning | Error], problem: conf.Problem) -> CheckMessage:
    return kind(problem.message, hint=problem.hint, id=problem.id)


def _beat(settings: conf.Settings, module: str | None) -> list[CheckMessage]:
    entries = [entry for entry in _beat_entries() if isinstance(entry, dict) and entry.get("task") == FLUSH_TASK]
    if not entries:
        return [
            Warning(
                f"The Celery beat schedule has no entry for {FLUSH_TASK}: queued events are never sent to Bento.",
                hint=_missing_entry_hint(settings, module)
                + ' If django-celery-beat keeps this schedule in the database instead, add "bento_tasks.W002" '
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


def _redis_memory(settings: conf.Settings) -> list[CheckMessage]:
    # An unreachable Redis is not reported here (`bento-tasks status` does), so that `manage.py migrate`
    # works without one, and costs it at most a second; nor is a Redis that refuses CONFIG (managed services
    # often do).
    try:
        policy = probe_memory_policy(settings)
    except BufferUnavailable:
        return []
    if policy in (None, "noeviction"):
        return []
    return [
        Error(
            f"The Redis at BENTO_REDIS_URL has maxmemory-policy {policy}: when it is full it deletes keys, and "
            "bento_tasks' queued events with them, without a trace.",
            hint="Set maxmemory-policy noeviction on that Redis (redis.conf: `maxmemory-policy noeviction`, or "
            "`redis-cli CONFIG SET maxmemory-policy noeviction`); a full Redis then refuses new events "
            "(track() raises BufferUnavailable) instead of losing queued ones.",
            id="bento_tasks.E004",
        )
    ]


def _outbox(settings: conf.Settings, databases: Any) -> list[CheckMessage]:
    """With BENTO_OUTBOX on: the table must exist (else every on-commit send fails) and beat must relay."""
    if not settings.outbox:
        return []
    from . import outbox

    # The database is read here even without --database: a missing table breaks every checkout.
    problems: list[CheckMessage] = [
        Warning(
            f"BENTO_OUTBOX is on but the {outbox.TABLE} table does not exist on database {alias!r}: "
            "send_event_on_commit() and on_commit=True helpers will fail.",
            hint=f"Run: python manage.py migrate bento_tasks --database {alias}",
            id="bento_tasks.W010",
        )
        for alias in outbox.missing_tables(databases)
    ]
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


def _missing_entry_hint(settings: conf.Settings, settings_module: str | None) -> str:
    entry = f'"{FLUSH_ENTRY}": {{"task": "{FLUSH_TASK}", "schedule": {settings.flush_interval:g}}}'
    generic = f"Add {entry} to CELERY_BEAT_SCHEDULE, or call bento_tasks.add_flush_schedule(app) in your celery.py."
    project = _project_celery_module(settings_module or "")
    if project is None:
        return generic
    package, module = project
    if _imports_a_celery_app(package):
        return generic
    # The usual cause: Celery's Django recipe has celery.py, but the package's __init__.py does not import it,
    # so neither Django nor this check ever loads that app (or its schedule).
    init = f"{package.replace('.', '/')}/__init__.py"
    relative = module.rpartition(".")[2]
    load = (
        f"{init} does not import the Celery app, so Django (and this check) never load it: add "
        f'"from .{relative} import app as celery_app" to {init} (Celery\'s Django recipe).'
    )
    path = module.replace(".", "/") + ".py"
    if _calls_add_flush_schedule(module):
        return f"{path} calls bento_tasks.add_flush_schedule(app), but {load}"
    return f"Call bento_tasks.add_flush_schedule(app) in {path}, or add {entry} to CELERY_BEAT_SCHEDULE; also {load}"


def _project_celery_module(settings_module: str) -> tuple[str, str] | None:
    """(package, module) of the project's Celery app module, found without importing it: for proj.settings,
    proj.celery or proj.celery_app (cookiecutter-django's config/celery_app.py for config.settings.base)."""
    parts = settings_module.split(".")[:-1]
    for package in (".".join(parts[:end]) for end in range(len(parts), 0, -1)):
        for name in ("celery", "celery_app"):
            try:
                if importlib.util.find_spec(f"{package}.{name}") is not None:
                    return package, f"{package}.{name}"
            except (ImportError, ValueError):
                continue
    return None


def _imports_a_celery_app(package: str) -> bool:
    """Whether the (already imported) package holds a Celery app, as ``from .celery import app`` leaves it."""
    loaded = sys.modules.get(package)
    return loaded is None or any(isinstance(value, Celery) for value in vars(loaded).values())


def _calls_add_flush_schedule(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    try:
        return origin is not None and "add_flush_schedule(" in Path(origin).read_text()
    except OSError:
        return False


def _period(schedule: Any) -> float:
    run_every = getattr(maybe_schedule(schedule), "run_every", None)
    # crontab and solar schedules have no fixed period; they fire at most once a minute.
    return run_every.total_seconds() if run_every is not None else 60.0
