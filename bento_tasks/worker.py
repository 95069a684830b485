"""What a Celery worker does when it starts: connected to Celery's worker signals on import.

``bento_tasks`` imports this module, so the project's own worker (which loads bento_tasks through
``autodiscover_tasks()``) and the standalone app both run it; outside a worker the signals never fire.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from . import conf

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
