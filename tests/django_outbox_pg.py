"""Django settings for tests/test_outbox.py on PostgreSQL (run by tests/test_django_suites.py).

PostgreSQL on 127.0.0.1:5432 with trust auth. pytest-django creates test_<NAME> for each alias and
drops it afterwards; the process id in the names keeps concurrent runs apart. Nothing else on the
server is read or written.
"""

import os

from tests.django_settings import *  # noqa: F403
from tests.django_settings import BENTO_FLUSH_INTERVAL


def _postgres(name: str) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "USER": "postgres",
        "NAME": name,
    }


DATABASES = {
    "default": _postgres(f"bento_outbox_{os.getpid()}"),
    "other": _postgres(f"bento_outbox_{os.getpid()}_other"),
}
BENTO_OUTBOX = True
CELERY_BEAT_SCHEDULE = {
    "bento-flush": {"task": "bento_tasks.flush_events", "schedule": BENTO_FLUSH_INTERVAL},
    "bento-relay": {"task": "bento_tasks.relay_outbox", "schedule": BENTO_FLUSH_INTERVAL},
}
