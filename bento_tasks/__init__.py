"""Send marketing events to Bento from Django and Celery: buffered in Redis, batched, never lost.

Importing this package never creates a Celery app: the tasks are ``shared_task``s
that your project's app (or ``bento_tasks.celery.app``) picks up.
"""

__version__ = "0.1.0"

from . import worker  # noqa: F401  (connects the worker-start hook)
from .api import track
from .exceptions import (
    BentoError,
    BrokerUnavailable,
    BufferUnavailable,
    ConfigurationError,
    InvalidEvent,
    InvalidFilter,
    OutboxMisuse,
)
from .helpers import purchase, remove_tag, send_event_on_commit, subscribe, tag, unsubscribe, update_fields
from .schedule import add_flush_schedule
from .tasks import flush_events, post_batch, relay_outbox, send_event

__all__ = [
    "BentoError",
    "BrokerUnavailable",
    "BufferUnavailable",
    "ConfigurationError",
    "InvalidEvent",
    "InvalidFilter",
    "OutboxMisuse",
    "__version__",
    "add_flush_schedule",
    "flush_events",
    "post_batch",
    "purchase",
    "relay_outbox",
    "remove_tag",
    "send_event",
    "send_event_on_commit",
    "subscribe",
    "tag",
    "track",
    "unsubscribe",
    "update_fields",
]
