"""What a Celery worker does when it starts, for any app that runs bento_tasks' tasks.

``celeryd_after_setup`` is sent in the worker's main process by ``celery -A APP worker``, after the
app's modules are imported (so also when ``bento_tasks`` arrives through a Django project's
``autodiscover_tasks()`` or ``INSTALLED_APPS``), after logging is configured, and before the pool is
forked or the broker connected. Importing ``bento_tasks`` connects the handler; only worker processes
ever run it, so producers, beat and the CLI are left alone.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_after_setup

from . import compat, conf


@celeryd_after_setup.connect(dispatch_uid="bento_tasks.worker.on_worker_start")
def on_worker_start(**kwargs: Any) -> None:
    enabled = conf.optional_setting("BENTO_CELERY_RECONNECT_FIX", conf.Settings.celery_reconnect_fix)
    compat.configure_reconnect_fix(enabled)
