"""The shop's settings for its own tests (pytest.ini): the same, on PostgreSQL when it is there.

pytest-django creates the test database (test_<NAME>) and drops it afterwards. The live tests' Celery
worker opens that database too, so without PostgreSQL on 127.0.0.1:5432 the tests use an SQLite file,
never ``:memory:``; with BENTO_TESTS_REQUIRE_POSTGRES=1 (CI) they insist on PostgreSQL.
"""

import os
import socket
import tempfile

from .settings import *  # noqa: F403


def _postgres_listens() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        return False
    return True


if os.environ.get("BENTO_TESTS_REQUIRE_POSTGRES") == "1" or _postgres_listens():
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "USER": "postgres",
            "NAME": f"bento_shop_{os.getpid()}",  # one per run: concurrent runs never share (or drop) one
        }
    }
else:
    _path = os.path.join(tempfile.gettempdir(), f"bento_shop_{os.getpid()}.sqlite3")
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _path, "TEST": {"NAME": _path}}}
