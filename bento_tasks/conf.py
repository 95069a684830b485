"""Settings: resolved once, from Django settings when Django is configured, else the environment.

Every setting is named ``BENTO_*`` in both places. ``get_settings()`` is the one
resolver; nothing else in the package reads ``os.environ`` or ``django.conf``.
Resolution is lazy (first send, flush or status call), never at import time.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .exceptions import ConfigurationError

MAX_BATCH_SIZE = 1000  # Bento's hard limit per request


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Units are in the names' docs; defaults ride out a one-hour Bento outage."""

    site_uuid: str
    publishable_key: str
    secret_key: str = field(repr=False)
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
    #: First retry delay in seconds; doubles each retry, jittered between half and the full step.
    retry_backoff: float = 2.0
    #: Cap of one retry delay in seconds; stays far below the broker's one-hour visibility_timeout.
    retry_backoff_max: float = 300.0
    #: Read timeout of a POST, seconds.
    timeout: float = 30.0
    #: Connect timeout of a POST, seconds.
    connect_timeout: float = 5.0
    #: Seconds added to the request timeouts to make a batch's lease (see ``lease_seconds``).
    lease_margin: float = 30.0
    #: Seconds delivery pauses after a 401/403/404 (a configuration fault) before trying again.
    config_error_pause: float = 300.0
    #: Mask emails in log lines (j***@example.com).
    mask_emails: bool = True
    #: Where track() and send_event put events: "redis" (the buffer, for production), or for tests
    #: "sync" (POST each event to Bento before returning) or "outbox" (kept in memory, see pytest_plugin).
    delivery: str = "redis"
    #: Celery 5.7 workers only: keep a worker alive when its Redis broker restarts (see bento_tasks.compat).
    celery_reconnect_fix: bool = True

    @property
    def lease_seconds(self) -> float:
        """How long an in-flight batch is left alone before a flush assumes its worker died.

        It follows the request timeout (plus a margin for the task's own work), not the broker's
        visibility_timeout, so a killed worker's batch is re-sent within about a minute.
        """
        return self.connect_timeout + self.timeout + self.lease_margin

    @property
    def events_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/batch/events"


def _parse_bool(value: Any) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off")


_REQUIRED = ("BENTO_SITE_UUID", "BENTO_PUBLISHABLE_KEY", "BENTO_SECRET_KEY")

# setting name -> (Settings field, parser)
_OPTIONAL: dict[str, tuple[str, Callable[[str], Any]]] = {
    "BENTO_API_URL": ("api_url", str),
    "BENTO_REDIS_URL": ("redis_url", str),
    "BENTO_REDIS_PREFIX": ("redis_prefix", str),
    "BENTO_FLUSH_INTERVAL": ("flush_interval", float),
    "BENTO_BATCH_SIZE": ("batch_size", int),
    "BENTO_BATCH_MAX_BYTES": ("batch_max_bytes", int),
    "BENTO_MAX_EVENT_BYTES": ("max_event_bytes", int),
    "BENTO_RATE_LIMIT": ("rate_limit", int),
    "BENTO_MAX_RETRIES": ("max_retries", int),
    "BENTO_RETRY_BACKOFF": ("retry_backoff", float),
    "BENTO_RETRY_BACKOFF_MAX": ("retry_backoff_max", float),
    "BENTO_TIMEOUT": ("timeout", float),
    "BENTO_CONNECT_TIMEOUT": ("connect_timeout", float),
    "BENTO_LEASE_MARGIN": ("lease_margin", float),
    "BENTO_CONFIG_ERROR_PAUSE": ("config_error_pause", float),
    "BENTO_MASK_EMAILS": ("mask_emails", _parse_bool),
    "BENTO_DELIVERY": ("delivery", str),
    "BENTO_CELERY_RECONNECT_FIX": ("celery_reconnect_fix", _parse_bool),
}

DELIVERY_MODES = ("redis", "sync", "outbox")


def _django_settings() -> Any | None:
    try:
        from django.conf import settings as django_settings
    except ImportError:
        return None
    # DJANGO_SETTINGS_MODULE alone is enough (the CLI, a worker before django.setup()):
    # Django loads that module on first access.
    configured = django_settings.configured or bool(os.environ.get("DJANGO_SETTINGS_MODULE"))
    return django_settings if configured else None


def _lookup(name: str, django_settings: Any | None) -> Any | None:
    if django_settings is not None:
        value = getattr(django_settings, name, None)
        if value is None:
            value = (getattr(django_settings, "BENTO", None) or {}).get(name.removeprefix("BENTO_"))
        return value
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def optional_setting(name: str, default: Any) -> Any:
    """One optional setting, parsed, without resolving (or requiring) the rest.

    For processes that need a single value and no Bento keys, e.g. a beat reading the flush interval.
    """
    value = _lookup(name, _django_settings())
    return default if value is None else _parse(name, value)


def _parse(name: str, value: Any) -> Any:
    try:
        return _OPTIONAL[name][1](value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} has an invalid value {value!r}") from None


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and loopback:
        return
    raise ConfigurationError(f"BENTO_API_URL must be an https:// URL (http:// only for loopback hosts), got {url!r}")


def _check(s: Settings) -> None:
    _check_url(s.api_url)
    if not 1 <= s.batch_size <= MAX_BATCH_SIZE:
        raise ConfigurationError(f"BENTO_BATCH_SIZE must be between 1 and {MAX_BATCH_SIZE}, got {s.batch_size}")
    positive = {
        "BENTO_FLUSH_INTERVAL": s.flush_interval,
        "BENTO_BATCH_MAX_BYTES": s.batch_max_bytes,
        "BENTO_MAX_EVENT_BYTES": s.max_event_bytes,
        "BENTO_RETRY_BACKOFF": s.retry_backoff,
        "BENTO_RETRY_BACKOFF_MAX": s.retry_backoff_max,
        "BENTO_TIMEOUT": s.timeout,
        "BENTO_CONNECT_TIMEOUT": s.connect_timeout,
        "BENTO_LEASE_MARGIN": s.lease_margin,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be greater than 0, got {value}")
    if s.rate_limit < 0 or s.max_retries < 0:
        raise ConfigurationError("BENTO_RATE_LIMIT and BENTO_MAX_RETRIES must be 0 or more")
    if s.delivery not in DELIVERY_MODES:
        raise ConfigurationError(f"BENTO_DELIVERY must be one of {', '.join(DELIVERY_MODES)}, got {s.delivery!r}")
    if s.max_event_bytes > s.batch_max_bytes:
        raise ConfigurationError("BENTO_MAX_EVENT_BYTES must not exceed BENTO_BATCH_MAX_BYTES")


def resolve_settings() -> Settings:
    """Read every ``BENTO_*`` setting now; raise ConfigurationError naming what to set."""
    django_settings = _django_settings()
    source = "your Django settings" if django_settings is not None else "the environment"
    values: dict[str, Any] = {}
    for name in _REQUIRED:
        value = _lookup(name, django_settings)
        if not value:
            raise ConfigurationError(f"{name} is not set: add it to {source} (see the bento-tasks README, Settings)")
        # A key read from a file often ends in a newline: Bento would answer 401 for ever.
        values[name.removeprefix("BENTO_").lower()] = str(value).strip()
    for name, (attr, _) in _OPTIONAL.items():
        value = _lookup(name, django_settings)
        if value is not None:
            values[attr] = _parse(name, value)
    resolved = Settings(**values)
    _check(resolved)
    return resolved


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
