"""Django settings for tests/test_outbox.py on SQLite (run by tests/test_django_suites.py).

Database files, not ``:memory:``: the relays these tests start as subprocesses must see the same data.
pytest-django creates the test files and deletes them afterwards.
"""

import os
import tempfile

from tests.django_outbox_pg import *  # noqa: F403


def _sqlite(alias: str) -> dict:
    path = os.path.join(tempfile.gettempdir(), f"bento_outbox_{os.getpid()}_{alias}.sqlite3")
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path, "TEST": {"NAME": path}}


DATABASES = {"default": _sqlite("default"), "other": _sqlite("other")}
