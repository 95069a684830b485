"""Django settings for tests/test_outbox.py on MariaDB or MySQL (run by tests/test_django_suites.py).

127.0.0.1:3306 as root without a password. pytest-django creates test_<NAME> for each alias and
drops it afterwards; the process id in the names keeps concurrent runs apart. The pure-Python PyMySQL
stands in for mysqlclient, which would need C headers on every machine that runs the tests.
"""

import os

import pymysql

from tests.django_outbox_pg import *  # noqa: F403

pymysql.install_as_MySQLdb()


def _mysql(name: str) -> dict:
    return {"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", "PORT": 3306, "USER": "root", "NAME": name}


DATABASES = {
    "default": _mysql(f"bento_outbox_{os.getpid()}"),
    "other": _mysql(f"bento_outbox_{os.getpid()}_other"),
}
