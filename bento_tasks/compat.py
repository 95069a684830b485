"""A fix for Celery 5.7 workers that exit when their Redis broker restarts.

The bug (celery 5.7.0, with kombu 5.6 or 5.7; not in 5.6.3; written up for upstream in
``docs/celery-5.7-redis-restart.md``): when the broker connection drops,
``Consumer.on_connection_error_after_connected`` calls ``connection.collect()`` and then, new in 5.7.0,
``connection.close()``. ``collect()`` detaches the transport (``transport.client = None``) but keeps
the connection's default channel. If collect's own close of that channel was cut short (a pending
BRPOP read raised ``ConnectionError`` because Redis is gone), ``close()`` closes it again: kombu's
Redis channel then restores its unacked messages and, to do so, rebuilds its connection pool from
``self.connection.client``, now ``None``. The resulting ``AttributeError`` ("'NoneType' object has no
attribute 'hostname'") is not a connection error, so ``ignore_errors`` lets it through and the worker
stops with "Unrecoverable error". Its unacked message then waits for the visibility timeout (an hour).

The fix: once ``collect()`` has run, the connection forgets its default channel, as kombu itself does
when it opens a new connection (``Connection._connection_factory``). The later ``close()`` then has
nothing stale to close, which is what Celery 5.6 did by never calling it: the worker reconnects, the
in-flight task finishes and its acknowledgement reaches the restarted Redis.

It is applied only in Celery worker processes (``bento_tasks.worker``), only on the Celery versions
that have the bug, and ``BENTO_CELERY_RECONNECT_FIX=false`` turns it off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import celery
from kombu import Connection

logger = logging.getLogger(__name__)

# The first release with the bug. No fixed release exists yet; tests/test_celery_reconnect.py fails
# once a worker without the fix survives, which is the time to add an upper bound here.
FIRST_AFFECTED = (5, 7)


def needs_reconnect_fix(version: tuple[int, ...]) -> bool:
    """Whether a Celery ``version`` (``celery.VERSION``'s numbers) has the Redis-restart crash."""
    return tuple(version[:2]) >= FIRST_AFFECTED


def celery_version() -> tuple[int, int, int]:
    return (celery.VERSION.major, celery.VERSION.minor, celery.VERSION.micro)


def apply_reconnect_fix() -> bool:
    """Make ``kombu.Connection.collect()`` forget the default channel; True if it was not applied before."""
    collect: Callable[..., Any] = Connection.collect
    if getattr(collect, "bento_reconnect_fix", False):
        return False

    @functools.wraps(collect)
    def collect_and_forget_channel(self: Connection, *args: Any, **kwargs: Any) -> Any:
        try:
            return collect(self, *args, **kwargs)
        finally:
            self._default_channel = None  # type: ignore[attr-defined]  # private: not in the kombu stubs

    collect_and_forget_channel.bento_reconnect_fix = True  # type: ignore[attr-defined]  # a marker on the function
    Connection.collect = collect_and_forget_channel  # type: ignore[method-assign]  # the fix is this patch
    return True


def configure_reconnect_fix(enabled: bool) -> None:
    """Apply the fix if this Celery needs it and ``enabled``; say so in the worker's log either way."""
    version = celery_version()
    if not needs_reconnect_fix(version):
        return
    release = ".".join(map(str, version))
    if not enabled:
        logger.warning(
            "bento_tasks: BENTO_CELERY_RECONNECT_FIX is off: this worker (celery %s) will exit when its "
            "Redis broker restarts while it holds an unacknowledged message",
            release,
        )
        return
    if apply_reconnect_fix():
        logger.info(
            "bento_tasks: Celery %s reconnect fix active: a Redis broker restart no longer stops this worker "
            "(kombu Connection.collect() forgets the stale default channel; BENTO_CELERY_RECONNECT_FIX=false "
            "turns this off)",
            release,
        )
