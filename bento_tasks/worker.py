"""What a Celery worker does when it starts, for any app that runs bento_tasks' tasks.

``celeryd_after_setup`` is sent in the worker's main process by ``celery -A APP worker``, after the
app's modules are imported (so also when ``bento_tasks`` arrives through a Django project's
``autodiscover_tasks()`` or ``INSTALLED_APPS``), after logging is configured, and before the pool is
forked or the broker connected. Importing ``bento_tasks`` connects the handler; only worker processes
ever run it, so producers, beat and the CLI are left alone. A problem is logged, never raised: the
worker keeps running.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup

from . import compat, conf
from .buffer import get_buffer
from .exceptions import BufferUnavailable, ConfigurationError

logger = logging.getLogger(__name__)


@celeryd_after_setup.connect(dispatch_uid="bento_tasks.worker.on_worker_start")
def on_worker_start(**kwargs: Any) -> None:
    enabled = conf.optional_setting("BENTO_CELERY_RECONNECT_FIX", conf.Settings.celery_reconnect_fix)
    compat.configure_reconnect_fix(enabled)
    report_settings()
    check_redis_memory()


def report_settings() -> None:
    """Log every settings problem once: a refused value, a missing key (this worker cannot POST), a
    BENTO_* environment variable Django settings do not use, an unknown name."""
    resolution = conf.resolve()
    for problem in resolution.errors:
        logger.error("bento_tasks: %s", problem)
    for problem in (*resolution.missing_keys, *resolution.warnings):
        logger.warning("bento_tasks: %s", problem)


def check_redis_memory() -> None:
    """Warn loudly when the buffer's Redis may evict keys: queued events would vanish without a trace."""
    try:
        policy = get_buffer().memory_policy()
    except (ConfigurationError, BufferUnavailable) as exc:
        logger.warning("bento_tasks: could not read the buffer Redis's maxmemory-policy: %s", exc)
        return
    if policy is None:
        logger.info("bento_tasks: this Redis does not allow CONFIG GET maxmemory-policy; make sure it is noeviction")
    elif policy != "noeviction":
        logger.warning(
            "bento_tasks: the buffer's Redis (BENTO_REDIS_URL) has maxmemory-policy %s: when it fills up it "
            "deletes keys, and queued events with them, silently. Set maxmemory-policy noeviction (redis.conf, "
            "or CONFIG SET maxmemory-policy noeviction): a full Redis then refuses new events loudly instead.",
            policy,
        )
