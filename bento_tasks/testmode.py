"""BENTO_DELIVERY's test modes: no Redis, no broker, no worker.

"outbox" keeps each event in memory (the ``bento_outbox`` pytest fixture reads it);
"sync" POSTs each event to Bento (in tests, the ``bento_fake`` server) before returning.
"""

from __future__ import annotations

import json
from typing import Any

from .client import Verdict, post_events
from .conf import Settings
from .exceptions import BentoError

#: Events delivered in "outbox" mode, as Bento would receive them (decoded JSON), oldest first.
outbox: list[dict[str, Any]] = []


def deliver(settings: Settings, raw: bytes) -> None:
    """Record or POST one encoded event now; a refused POST raises, so a test sees it."""
    if settings.delivery == "outbox":
        outbox.append(json.loads(raw))
        return
    outcome = post_events(settings, [raw])
    if outcome.verdict is not Verdict.DELIVERED:
        raise BentoError(f"BENTO_DELIVERY=sync: Bento answered {outcome.status or '-'}: {outcome.detail[:200]}")
