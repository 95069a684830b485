"""The status snapshot: what ``bento-tasks status``, the admin's status page and the metrics all show.

One function gathers it, so the three cannot disagree: the buffer's figures (Redis), the outbox backlog
(the database, when ``BENTO_OUTBOX`` is on under Django) and which Redis and settings source were read.
"""

from __future__ import annotations

from typing import Any

from . import conf
from .buffer import Buffer, describe_redis, get_buffer


def origin(settings: conf.Settings) -> dict[str, Any]:
    """``redis`` (host, port, db; never a password) and ``settings`` (where they came from)."""
    return {"redis": describe_redis(settings.redis_url), "settings": settings.source}


def redis_text(where: dict[str, Any]) -> str:
    """``describe_redis``'s answer as one line: ``host:port db N`` (or the socket path)."""
    server = where["path"] if "path" in where else f"{where['host']}:{where['port']}"
    return f"{server} db {where['db']}"


def outbox_backlog(settings: conf.Settings) -> dict[str, Any]:
    """``outbox`` rows waiting and ``outbox_oldest_age`` seconds; both None when the outbox is off or Django is not."""
    if not settings.outbox or not conf.load_django():
        return {"outbox": None, "outbox_oldest_age": None}
    from . import outbox

    count, age = outbox.backlog()
    return {"outbox": count, "outbox_oldest_age": age}


def snapshot(buffer: Buffer | None = None) -> dict[str, Any]:
    """Every status figure (``Buffer.status``, the outbox backlog, the origin); BufferUnavailable without Redis."""
    buffer = buffer or get_buffer()
    return {**buffer.status(), **outbox_backlog(buffer.settings), **origin(buffer.settings)}
