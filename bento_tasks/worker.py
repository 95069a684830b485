"""What a Celery worker does when it starts: connected to Celery's worker signals on import.

``bento_tasks`` imports this module, so the project's own worker (which loads bento_tasks through
``autodiscover_tasks()``) and the standalone app both run it; outside a worker the signals never fire.
A problem is logged, never raised: the worker keeps running.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from . import conf
from .buffer import get_buffer
from .exceptions import BufferUnavailable, ConfigurationError

logger = logging.getLogger(__name__)


def report_settings(sender: Any = None, **kwargs: Any) -> None:
    """Log, once per worker, every settings problem: a refused value, a missing key (this worker cannot
    POST), a BENTO_* environment variable Django settings do not use, an unknown name."""
    resolution = conf.resolve()
    for problem in resolution.errors:
        logger.error("bento_tasks: %s", problem)
    for problem in (*resolution.missing_keys, *resolution.warnings):
        logger.warning("bento_tasks: %s", problem)


worker_ready.connect(report_settings, weak=False, dispatch_uid="bento_tasks.worker.report_settings")


@worker_ready.connect(dispatch_uid="bento_tasks.worker.check_redis_memory")
def check_redis_memory(**kwargs: Any) -> None:
    """Warn loudly when the buffer's Redis may evict keys: queued events would vanish without a trace."""
    try:
        buffer = get_buffer()
        policy = buffer.memory_policy()
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
