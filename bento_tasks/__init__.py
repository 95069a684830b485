"""Send marketing events to Bento from Django and Celery: buffered in Redis, batched, never lost.

Importing this package never creates a Celery app: the tasks are ``shared_task``s
that your project's app (or ``bento_tasks.celery.app``) picks up.
"""

__version__ = "0.1.0"

from .api import track
from .exceptions import BentoError, BufferUnavailable, ConfigurationError, InvalidEvent
from .tasks import flush_events, post_batch, send_event

__all__ = [
    "BentoError",
    "BufferUnavailable",
    "ConfigurationError",
    "InvalidEvent",
    "__version__",
    "flush_events",
    "post_batch",
    "send_event",
    "track",
]
