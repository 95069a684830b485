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

The fix, at the narrowest point: while Celery's ``Consumer.on_connection_error_after_connected`` runs,
the one connection it is cleaning up forgets its default channel once ``collect()`` has run, as kombu
itself does when it opens a new connection (``Connection._connection_factory``). The ``close()`` that
follows then has nothing stale to close, which is what Celery 5.6 did by never calling it: the worker
reconnects, the in-flight task finishes and its acknowledgement reaches the restarted Redis. kombu's
``Connection`` class, every other connection (the producer pools of tasks, the result backend) and every
other moment are left alone.

It is applied only in the worker's main process (``bento_tasks.worker``, where the consumer runs), only
on the Celery releases in ``AFFECTED``, and ``BENTO_CELERY_RECONNECT_FIX=false`` turns it off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import celery

logger = logging.getLogger(__name__)

#: The Celery releases (major, minor) with the bug: 5.7 (5.7.0 is the only 5.7 release so far). No later
#: release is assumed to have it. tests/test_celery_reconnect.py holds this to the installed Celery's own
#: code: it fails when a release outside these crashes on a stale channel (add it here), or one inside
#: them no longer does (narrow this to the releases that still do).
AFFECTED = ((5, 7),)


def needs_reconnect_fix(version: tuple[int, ...]) -> bool:
    """Whether a Celery ``version`` (``celery.VERSION``'s numbers) has the Redis-restart crash."""
    return tuple(version[:2]) in AFFECTED


def celery_version() -> tuple[int, int, int]:
    return (celery.VERSION.major, celery.VERSION.minor, celery.VERSION.micro)


def apply_reconnect_fix() -> bool:
    """Wrap Celery's ``Consumer.on_connection_error_after_connected`` so that the connection it cleans up forgets
    its default channel once ``collect()`` has run; True if it was not applied before."""
    # Imported here: producers import bento_tasks (and so this module) but never run a consumer.
    from celery.worker.consumer.consumer import Consumer

    cleanup: Callable[[Consumer, Exception], None] = Consumer.on_connection_error_after_connected
    if getattr(cleanup, "bento_reconnect_fix", False):
        return False

    @functools.wraps(cleanup)
    def cleanup_forgetting_the_stale_channel(self: Consumer, exc: Exception) -> None:
        connection = self.connection
        if connection is None:
            cleanup(self, exc)
            return
        collect = connection.collect

        def collect_and_forget_channel(*args: Any, **kwargs: Any) -> Any:
            try:
                return collect(*args, **kwargs)
            finally:
                connection._default_channel = None  # type: ignore[attr-defined]  # private: not in the kombu stubs

        # On this connection only, and only while Celery cleans it up (it is closed and dropped afterwards).
        connection.collect = collect_and_forget_channel  # type: ignore[method-assign]
        try:
            cleanup(self, exc)
        finally:
            del connection.collect

    cleanup_forgetting_the_stale_channel.bento_reconnect_fix = True  # type: ignore[attr-defined]
    Consumer.on_connection_error_after_connected = cleanup_forgetting_the_stale_channel  # type: ignore[method-assign]
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
            "(after a lost connection, Celery's consumer forgets the stale default channel of the connection it "
            "collected before closing it; BENTO_CELERY_RECONNECT_FIX=false turns this off)",
            release,
        )
