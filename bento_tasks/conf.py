"""Settings: resolved once, from Django settings when Django is configured, else the environment.

Every setting is named ``BENTO_*`` in both places. This module is the one resolver; nothing else in
the package reads ``os.environ`` or ``django.conf`` for them. Resolution is lazy (first send, flush
or status call), never at import time.

``resolve()`` reads every setting, checks each one and reports every problem at once: errors (a
value bento-tasks refuses: the expected type or range and an example), warnings (an unknown
``BENTO_*`` name, with the closest known one; a ``BENTO_*`` environment variable that Django
settings do not use; an API URL that is not an API base) and, separately, missing Bento keys.

The keys are the one part resolved but not required: only the code that POSTs needs them
(``Settings.require_keys()``), so a web process holding nothing but ``BENTO_REDIS_URL`` can queue
events, and ``status`` needs no secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .exceptions import ConfigurationError

MAX_BATCH_SIZE = 1000  # Bento's hard limit per request
DELIVERY_MODES = ("redis", "sync", "outbox")
KEYS = ("BENTO_SITE_UUID", "BENTO_PUBLISHABLE_KEY", "BENTO_SECRET_KEY")
API_BASE_PATH = "/api/v1"
# BENTO_* environment variables that are not settings: this repository's own test switches (tests/, .ci/run).
NOT_SETTINGS = frozenset(
    {
        "BENTO_TESTS_REQUIRE_REDIS",
        "BENTO_TESTS_REQUIRE_BROWSER",
        "BENTO_TESTS_REQUIRE_POSTGRES",
        "BENTO_TESTS_REQUIRE_MYSQL",
    }
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings, worded for where they came from.

    ``id`` is the ``manage.py check`` id (``bento_tasks.E003``); ``setting`` the name it is about.
    """

    id: str
    setting: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message} {self.hint}"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Units are in the names' docs; defaults ride out a one-hour Bento outage."""

    #: Your Bento site; with the two keys, needed only by the code that POSTs (see ``require_keys``).
    site_uuid: str = ""
    #: HTTP Basic user.
    publishable_key: str = ""
    #: HTTP Basic password; never in a repr, a log line or status output.
    secret_key: str = field(default="", repr=False)
    #: Base URL of the API; https only, except loopback hosts (tests, the demo).
    api_url: str = "https://app.bentonow.com/api/v1"
    #: Redis holding the buffer (queue, in-flight batches, dead letters, limiter).
    redis_url: str = "redis://localhost:6379/0"
    #: Prefix of every Redis key; wrapped in {} so all keys share one Redis Cluster slot.
    redis_prefix: str = "bento"
    #: Seconds between beat-scheduled flushes.
    flush_interval: float = 5.0
    #: Events per POST, 1..1000.
    batch_size: int = MAX_BATCH_SIZE
    #: Bytes of event JSON per POST; a claim stops short of it.
    batch_max_bytes: int = 4 * 1024 * 1024
    #: Bytes of one serialized event; larger ones are refused by track() and dead-lettered before a POST.
    max_event_bytes: int = 64 * 1024
    #: POSTs per minute shared by all workers (Bento documents 100 for /batch/*); 0 disables the limiter.
    rate_limit: int = 100
    #: Retries after the first attempt before a batch is dead-lettered.
    max_retries: int = 40
    #: Failed attempts while Bento accepted other batches before a batch is cut in two (a single event:
    #: dead-lettered), so one event Bento cannot take does not sink its neighbours.
    isolate_after: int = 3
    #: Attempts sent without an answer (Bento may have recorded them) before a batch stops being re-sent
    #: whole; bounds the copies a lost answer can make (see the README's Delivery guarantee).
    max_unanswered: int = 3
    #: Attempts whose worker died while posting before the batch is cut into pieces (a single event:
    #: dead-lettered), so an event that kills workers does not loop.
    max_worker_deaths: int = 3
    #: First retry delay in seconds; doubles each retry, jittered between half and the full step.
    retry_backoff: float = 2.0
    #: Cap of one retry delay in seconds; stays far below the broker's one-hour visibility_timeout.
    retry_backoff_max: float = 300.0
    #: Read timeout of a POST, seconds; the whole POST must also end within connect + read timeout.
    timeout: float = 30.0
    #: Connect timeout of a POST, seconds.
    connect_timeout: float = 5.0
    #: Seconds added to the POST's deadline to make a batch's lease (see ``lease_seconds``).
    lease_margin: float = 30.0
    #: Seconds delivery pauses after a 401/403/404 (a configuration fault) before trying again.
    config_error_pause: float = 300.0
    #: Mask emails in log lines (j***@example.com).
    mask_emails: bool = True
    #: Where track() and send_event put events: "redis" (the buffer, for production), or for tests
    #: "sync" (POST each event to Bento before returning) or "outbox" (kept in memory, see pytest_plugin).
    delivery: str = "redis"
    #: Write events sent with send_event_on_commit (and on_commit=True) into the outbox table, in the caller's
    #: database transaction, and relay them to Redis after commit (Django only; see bento_tasks.outbox).
    outbox: bool = False
    #: Celery 5.7 workers only: keep a worker alive when its Redis broker restarts (see bento_tasks.compat).
    celery_reconnect_fix: bool = True
    #: Bearer token a Prometheus scrape must send to the metrics view and ``bento-tasks metrics``
    #: ("" : the Django view admits only users with the view permission on the Bento status).
    metrics_token: str = field(default="", repr=False)
    #: Where these values came from, for status output and messages: "the environment" or
    #: "Django settings (proj.settings)".
    source: str = field(default="the environment", compare=False)
    #: Why each missing key is missing, as seen at resolution; raised by ``require_keys()``.
    key_problems: tuple[Problem, ...] = field(default=(), repr=False, compare=False)

    @property
    def post_deadline(self) -> float:
        """Wall-clock limit of one POST, seconds: connect, send and the whole answer, however slowly it comes."""
        return self.connect_timeout + self.timeout

    @property
    def lease_seconds(self) -> float:
        """How long an in-flight batch is left alone before a flush assumes its worker died.

        It follows the POST's deadline (plus a margin for the task's own work), not the broker's
        visibility_timeout, so a killed worker's batch is re-sent within about a minute, and a live
        worker, whose POST is cut off at the deadline, never has its batch recovered under it.
        """
        return self.post_deadline + self.lease_margin

    @property
    def events_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/batch/events"

    def require_keys(self) -> None:
        """Raise ConfigurationError naming every missing key and why it is missing; for code that POSTs."""
        values = (self.site_uuid, self.publishable_key, self.secret_key)
        missing = [name for name, value in zip(KEYS, values, strict=True) if not value]
        if missing:
            known = {problem.setting: problem for problem in self.key_problems}
            raise configuration_error([known.get(name) or _missing_key(name, None) for name in missing], self.source)


@dataclass(frozen=True)
class Resolution:
    """Everything ``resolve()`` found: the settings (None when any value is refused) and the problems."""

    settings: Settings | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    missing_keys: tuple[Problem, ...]
    source: str
    #: The Django settings module (None for the environment, or settings configured in code).
    module: str | None = None


# -- parsers: each returns the value or raises ValueError; the spec says what was expected ------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value.strip()


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value)
        else:  # 2.7, "2.7", "lots": a count is never a fraction
            raise ValueError
        if number < low or (high is not None and number > high):
            raise ValueError
        return number

    return parse


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = float(value)  # "5s" raises ValueError
    if not math.isfinite(number) or number <= 0:
        raise ValueError
    return number


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in options:
            raise ValueError
        return value.strip()

    return parse


def _prefix(value: Any) -> str:
    text = _text(value)
    if "{" in text or "}" in text:  # the prefix becomes a hash tag: {prefix}:queue
        raise ValueError
    return text


def _redis_url(value: Any) -> str:
    text = _text(value)
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError
    return text


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_url(value: Any) -> str:
    text = _text(value)
    parts = urlsplit(text)
    host = parts.hostname or ""
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))):
        raise ValueError
    return text


@dataclass(frozen=True)
class _Spec:
    attr: str
    parse: Callable[[Any], Any]
    expected: str
    example: Any
    id: str = "bento_tasks.E003"
    #: Echo the refused value in messages (never for keys or URLs that may hold a password).
    shown: bool = True


SPECS: dict[str, _Spec] = {
    "BENTO_SITE_UUID": _Spec("site_uuid", _text, "your Bento site UUID", "...", shown=False),
    "BENTO_PUBLISHABLE_KEY": _Spec("publishable_key", _text, "your publishable key", "...", shown=False),
    "BENTO_SECRET_KEY": _Spec("secret_key", _text, "your secret key", "...", shown=False),
    "BENTO_API_URL": _Spec(
        "api_url",
        _api_url,
        "an https:// URL (http:// only for loopback hosts such as a local fake): the secret key must not "
        "travel in clear text",
        Settings.api_url,
        id="bento_tasks.E002",
    ),
    "BENTO_REDIS_URL": _Spec(
        "redis_url", _redis_url, "a redis://, rediss:// or unix:// URL", Settings.redis_url, shown=False
    ),
    "BENTO_REDIS_PREFIX": _Spec("redis_prefix", _prefix, "a non-empty text without { or }", Settings.redis_prefix),
    "BENTO_FLUSH_INTERVAL": _Spec("flush_interval", _seconds, "a number of seconds above 0", 5),
    "BENTO_BATCH_SIZE": _Spec(
        "batch_size",
        _integer(1, MAX_BATCH_SIZE),
        f"a whole number from 1 to {MAX_BATCH_SIZE} (Bento accepts at most {MAX_BATCH_SIZE} events per request)",
        MAX_BATCH_SIZE,
        id="bento_tasks.E001",
    ),
    "BENTO_BATCH_MAX_BYTES": _Spec(
        "batch_max_bytes", _integer(1), "a whole number of bytes, at least 1", Settings.batch_max_bytes
    ),
    "BENTO_MAX_EVENT_BYTES": _Spec(
        "max_event_bytes", _integer(1), "a whole number of bytes, at least 1", Settings.max_event_bytes
    ),
    "BENTO_RATE_LIMIT": _Spec(
        "rate_limit", _integer(0), "a whole number of requests per minute, 0 or more (0: no limit)", 100
    ),
    "BENTO_MAX_RETRIES": _Spec("max_retries", _integer(0), "a whole number, 0 or more", Settings.max_retries),
    "BENTO_ISOLATE_AFTER": _Spec("isolate_after", _integer(1), "a whole number, 1 or more", Settings.isolate_after),
    "BENTO_MAX_UNANSWERED": _Spec("max_unanswered", _integer(1), "a whole number, 1 or more", Settings.max_unanswered),
    "BENTO_MAX_WORKER_DEATHS": _Spec(
        "max_worker_deaths", _integer(1), "a whole number, 1 or more", Settings.max_worker_deaths
    ),
    "BENTO_RETRY_BACKOFF": _Spec("retry_backoff", _seconds, "a number of seconds above 0", 2),
    "BENTO_RETRY_BACKOFF_MAX": _Spec("retry_backoff_max", _seconds, "a number of seconds above 0", 300),
    "BENTO_TIMEOUT": _Spec("timeout", _seconds, "a number of seconds above 0", 30),
    "BENTO_CONNECT_TIMEOUT": _Spec("connect_timeout", _seconds, "a number of seconds above 0", 5),
    "BENTO_LEASE_MARGIN": _Spec("lease_margin", _seconds, "a number of seconds above 0", 30),
    "BENTO_CONFIG_ERROR_PAUSE": _Spec("config_error_pause", _seconds, "a number of seconds above 0", 300),
    "BENTO_MASK_EMAILS": _Spec("mask_emails", _boolean, "true or false (also 1/0, yes/no, on/off, in any case)", True),
    "BENTO_DELIVERY": _Spec("delivery", _choice(*DELIVERY_MODES), f"one of {', '.join(DELIVERY_MODES)}", "redis"),
    "BENTO_OUTBOX": _Spec("outbox", _boolean, "true or false (also 1/0, yes/no, on/off, in any case)", False),
    "BENTO_CELERY_RECONNECT_FIX": _Spec(
        "celery_reconnect_fix", _boolean, "true or false (also 1/0, yes/no, on/off, in any case)", True
    ),
    "BENTO_METRICS_TOKEN": _Spec(
        "metrics_token", _text, "a text token, sent as 'Authorization: Bearer <token>'", "...", shown=False
    ),
}

_KEY_WHAT = {
    "BENTO_SITE_UUID": "your site UUID",
    "BENTO_PUBLISHABLE_KEY": "your publishable key",
    "BENTO_SECRET_KEY": "your secret key",
}


# -- sources ------------------------------------------------------------------------------------------


def _django_settings() -> Any | None:
    try:
        from django.conf import settings as django_settings
    except ImportError:
        return None
    # DJANGO_SETTINGS_MODULE alone is enough (the CLI, a worker before django.setup()):
    # Django loads that module on first access.
    configured = django_settings.configured or bool(os.environ.get("DJANGO_SETTINGS_MODULE"))
    return django_settings if configured else None


def load_django() -> bool:
    """Whether Django is configured; if so, its apps are loaded, as the ORM (the outbox) needs.

    ``manage.py`` and a Django project's worker have loaded them; ``python -m bento_tasks`` run with
    DJANGO_SETTINGS_MODULE has not.
    """
    if _django_settings() is None:
        return False
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    return True


class _Source:
    """Where the values are read: Django settings (top-level names, then the BENTO dict) or the environment."""

    def __init__(self, django_settings: Any | None, environ: Mapping[str, str]) -> None:
        self.django = django_settings
        self.environ = environ
        self.module: str | None = None
        self.bento: Mapping[str, Any] = {}
        self.errors: list[Problem] = []
        if django_settings is not None:
            # override_settings (tests) hides SETTINGS_MODULE; Django itself reads the variable.
            self.module = getattr(django_settings, "SETTINGS_MODULE", None) or environ.get("DJANGO_SETTINGS_MODULE")
            bento = getattr(django_settings, "BENTO", None)
            if isinstance(bento, Mapping):
                self.bento = bento
            elif bento is not None:
                self.errors.append(
                    Problem(
                        "bento_tasks.E003",
                        "BENTO",
                        f"BENTO is a {type(bento).__name__}: expected a dict of settings without the BENTO_ prefix.",
                        'For example BENTO = {"REDIS_URL": "redis://localhost:6379/0"}, or use BENTO_* settings.',
                    )
                )

    @property
    def description(self) -> str:
        if self.django is None:
            return "the environment"
        return f"Django settings ({self.module})" if self.module else "Django settings (configured in code)"

    @property
    def settings_file(self) -> str:
        return f"your settings module ({self.module})" if self.module else "your Django settings"

    def get(self, name: str) -> tuple[bool, Any]:
        """(whether the source defines the name at all, its value); an empty text counts as defined but unset."""
        if self.django is None:
            return name in self.environ, self.environ.get(name)
        value = getattr(self.django, name, None)
        if value is None:
            key = name.removeprefix("BENTO_")
            if key in self.bento:
                return True, self.bento[key]
            return hasattr(self.django, name), None
        return True, value

    def example(self, name: str, value: Any) -> str:
        if self.django is None:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            return f"{name}={text}"
        return f'{name} = "{value}"' if isinstance(value, str) else f"{name} = {value!r}"

    def names(self) -> list[str]:
        """Every BENTO_* name this source holds, as its user wrote it."""
        if self.django is None:
            return [name for name in self.environ if name.startswith("BENTO_")]
        return [name for name in dir(self.django) if name.startswith("BENTO_")] + [
            f'BENTO["{key}"]' for key in self.bento
        ]


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _missing_key(name: str, source: _Source | None) -> Problem:
    """W001 for one key, naming the cause this process can see."""
    what = f"{_KEY_WHAT[name]} (Bento: Settings > API keys)"
    if source is None or source.django is None:
        return Problem(
            "bento_tasks.W001",
            name,
            f"{name} is not set in the environment of this process: bento_tasks cannot send anything to Bento.",
            f"Set that variable to {what}, e.g. export {name}=...",
        )
    defined, _ = source.get(name)
    exported = bool(source.environ.get(name, "").strip())
    if not defined:
        seen = f", although the environment variable {name} is set (under Django only settings are read)"
        return Problem(
            "bento_tasks.W001",
            name,
            f"{name} is not set in {source.settings_file}{seen if exported else ''}: bento_tasks cannot send "
            "anything to Bento.",
            f'Add {name} = os.environ["{name}"] to settings.py'
            + ("." if exported else f" and set that variable to {what}."),
        )
    if exported:
        return Problem(
            "bento_tasks.W001",
            name,
            f"{name} is empty in {source.settings_file}, although the environment variable {name} is set: "
            "settings.py does not read it.",
            f'Read it there: {name} = os.environ["{name}"].',
        )
    return Problem(
        "bento_tasks.W001",
        name,
        f"{name} is empty in {source.settings_file}, and no environment variable {name} is set in this process.",
        f'If settings.py reads it with os.environ.get("{name}", ""), the variable is not exported in the shell that '
        f"started this process: export it there, set to {what}, and start the process again.",
    )


def _refused(name: str, spec: _Spec, value: Any, source: _Source) -> Problem:
    shown = f" is {value!r}" if spec.shown else " has a value bento-tasks refuses"
    return Problem(
        spec.id,
        name,
        f"{name}{shown}: expected {spec.expected}.",
        f"For example {source.example(name, spec.example)}, or remove it for the default.",
    )


def _unknown_names(source: _Source) -> list[Problem]:
    known = list(SPECS)
    problems = []
    for name in source.names():
        if name in SPECS or name in NOT_SETTINGS:
            continue
        if name.startswith('BENTO["'):
            key = name[len('BENTO["') : -2]
            if f"BENTO_{key}" in SPECS:
                continue
            close = difflib.get_close_matches(key, [k.removeprefix("BENTO_") for k in known], n=1)
            guess = f'BENTO["{close[0]}"]' if close else None
        else:
            close = difflib.get_close_matches(name, known, n=1)
            guess = close[0] if close else None
        problems.append(
            Problem(
                "bento_tasks.W005",
                name,
                f"{name} in {source.description} is not a bento-tasks setting, so it is ignored.",
                f"Did you mean {guess}?" if guess else "The bento-tasks README lists every setting (Settings).",
            )
        )
    return problems


def _unread_environment(source: _Source, values: Mapping[str, Any]) -> list[Problem]:
    """W004: under Django, BENTO_* environment variables are not read; say so for each one Django does not use."""
    problems = []
    for name, spec in SPECS.items():
        text = source.environ.get(name, "")
        if not text.strip():
            continue
        defined, value = source.get(name)
        if _unset(value):
            if name in KEYS:
                continue  # W001 says it, with this cause
            message = (
                f"The environment variable {name} is set, but bento_tasks reads {source.description}, "
                f"where {name} is {'empty' if defined else 'not set'}: the default {getattr(Settings, spec.attr)!r} "
                "is used."
            )
        else:
            try:
                same = spec.parse(text) == values.get(spec.attr, value)
            except (TypeError, ValueError, OverflowError):
                same = False
            if same:
                continue
            message = (
                f"The environment variable {name} differs from {name} in {source.description}; "
                "bento_tasks uses the Django setting and ignores the variable."
            )
        problems.append(
            Problem(
                "bento_tasks.W004",
                name,
                message,
                f'To use the variable, read it in settings.py: {name} = os.environ["{name}"] '
                f'(or os.environ.get("{name}", default)); otherwise unset it.',
            )
        )
    return problems


def _api_base(url: str, source: _Source) -> list[Problem]:
    path = urlsplit(url).path.rstrip("/")
    if path.endswith(API_BASE_PATH):
        return []
    endpoint = f"{url.rstrip('/')}/batch/events"
    fix = " (without /batch/events: bento-tasks adds it)" if path.endswith("/batch/events") else ""
    return [
        Problem(
            "bento_tasks.W006",
            "BENTO_API_URL",
            f"BENTO_API_URL {url!r} does not end in {API_BASE_PATH}: events would be POSTed to {endpoint}, "
            "which is not Bento's batch endpoint.",
            f"Give the API base, e.g. {source.example('BENTO_API_URL', Settings.api_url)} (the default){fix}.",
        )
    ]


def _resolve(source: _Source) -> Resolution:
    values: dict[str, Any] = {}
    errors = list(source.errors)
    missing_keys = []
    for name, spec in SPECS.items():
        _, raw = source.get(name)
        if _unset(raw):
            if name in KEYS:
                missing_keys.append(_missing_key(name, source))
            continue
        try:
            values[spec.attr] = spec.parse(raw)
        except (TypeError, ValueError, OverflowError):
            errors.append(_refused(name, spec, raw, source))
    warnings = _unknown_names(source)
    if source.django is not None:
        warnings += _unread_environment(source, values)
    if "api_url" in values:
        warnings += _api_base(values["api_url"], source)
    event_bytes = values.get("max_event_bytes", Settings.max_event_bytes)
    batch_bytes = values.get("batch_max_bytes", Settings.batch_max_bytes)
    if event_bytes > batch_bytes:
        errors.append(
            Problem(
                "bento_tasks.E003",
                "BENTO_MAX_EVENT_BYTES",
                f"BENTO_MAX_EVENT_BYTES ({event_bytes}) is above BENTO_BATCH_MAX_BYTES ({batch_bytes}): "
                "such an event could never be sent.",
                "Keep BENTO_MAX_EVENT_BYTES at or below BENTO_BATCH_MAX_BYTES.",
            )
        )
    settings = None
    if not errors:
        settings = Settings(**values, source=source.description, key_problems=tuple(missing_keys))
    return Resolution(settings, tuple(errors), tuple(warnings), tuple(missing_keys), source.description, source.module)


def resolve() -> Resolution:
    """Read and check every setting now, without raising: for ``manage.py check``, status and worker start."""
    return _resolve(_Source(_django_settings(), os.environ))


def configuration_error(problems: list[Problem], source: str) -> ConfigurationError:
    """One ConfigurationError listing every problem, each with what to do."""
    lines = tuple(str(problem) for problem in problems)
    if len(lines) == 1:
        return ConfigurationError(lines[0], lines)
    listed = "\n".join(f"- {line}" for line in lines)
    return ConfigurationError(f"{len(lines)} problems with the bento-tasks settings (from {source}):\n{listed}", lines)


def resolve_settings() -> Settings:
    """Read every ``BENTO_*`` setting now; raise ConfigurationError listing every refused value."""
    resolution = resolve()
    if resolution.settings is None:
        raise configuration_error(list(resolution.errors), resolution.source)
    return resolution.settings


def optional_setting(name: str, default: Any) -> Any:
    """One optional setting, parsed, without resolving (or requiring) the rest.

    For processes that need a single value, e.g. a beat reading the flush interval.
    """
    source = _Source(_django_settings(), os.environ)
    _, raw = source.get(name)
    if _unset(raw):
        return default
    spec = SPECS[name]
    try:
        return spec.parse(raw)
    except (TypeError, ValueError, OverflowError):
        raise configuration_error([_refused(name, spec, raw, source)], source.description) from None


_lock = threading.Lock()
_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, resolved on first use."""
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = resolve_settings()
    return _cached


def reset_settings() -> None:
    """Forget the resolved settings (tests, or after changing Django settings at run time)."""
    global _cached
    with _lock:
        _cached = None
