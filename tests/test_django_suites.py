"""The Django tests, each suite in its own pytest-django process.

Once Django is configured in a process, bento_tasks reads Django settings instead of the
environment, so these suites cannot share the main test process. A failure prints the suite's output.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


def run_pytest(cwd, *args: str) -> None:
    # Settings come from each suite's Django settings module, never from this process's environment.
    leaks = ("BENTO_", "DJANGO_", "CELERY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaks) or k.startswith("BENTO_TESTS_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"pytest {' '.join(args)} in {cwd} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    assert " passed" in done.stdout, done.stdout


def postgres_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5").close()
    except psycopg.Error:
        return False
    return True


def mariadb_reachable() -> bool:
    import pymysql

    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5).close()
    except pymysql.Error:
        return False
    return True


def require(reachable: bool, flag: str, what: str) -> None:
    """Skip when a database server is missing, except where ``flag``=1 (CI sets it): there, fail."""
    if reachable:
        return
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {what} cannot be reached")
    pytest.skip(f"needs {what}")


def test_django_integration_suite_passes():
    """tests/test_django_app.py (checks, settings from Django, on-commit sends) passes under pytest-django."""
    run_pytest(ROOT, "--ds=tests.django_settings", "tests/test_django_app.py")


def test_django_admin_suite_passes():
    """tests/test_django_admin.py (admin pages and permissions, the metrics view, manage.py bento) passes."""
    run_pytest(ROOT, "--ds=tests.django_admin_settings", "tests/test_django_admin.py")


@pytest.mark.slow
def test_django_browser_suite_passes():
    """tests/test_django_browser.py (the admin in headless Chromium, a live worker delivering a replay) passes."""
    browser = all(os.path.exists(path) for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"))
    if not browser and os.environ.get("BENTO_TESTS_REQUIRE_BROWSER") != "1":
        pytest.skip(
            "needs Debian's chromium and chromium-driver (CI installs them and sets BENTO_TESTS_REQUIRE_BROWSER=1)"
        )
    run_pytest(ROOT, "--ds=tests.django_admin_settings", "tests/test_django_browser.py")


def test_outbox_suite_passes_on_postgresql():
    """tests/test_outbox.py (the transactional outbox: transactions, relays, kills, concurrency) on PostgreSQL."""
    require(postgres_reachable(), "BENTO_TESTS_REQUIRE_POSTGRES", "PostgreSQL on 127.0.0.1:5432 (user postgres, trust)")
    run_pytest(ROOT, "--ds=tests.django_outbox_pg", "tests/test_outbox.py")


def test_outbox_suite_passes_on_mariadb():
    """tests/test_outbox.py on MariaDB/MySQL, the other database with SELECT ... FOR UPDATE SKIP LOCKED."""
    require(mariadb_reachable(), "BENTO_TESTS_REQUIRE_MYSQL", "MariaDB or MySQL on 127.0.0.1:3306 (root, no password)")
    run_pytest(ROOT, "--ds=tests.django_outbox_mysql", "tests/test_outbox.py")


def test_outbox_suite_passes_on_sqlite():
    """tests/test_outbox.py on SQLite (database files), where relays serialize on the write lock."""
    run_pytest(ROOT, "--ds=tests.django_outbox_sqlite", "tests/test_outbox.py")


@pytest.mark.slow
def test_example_shop_suite_passes():
    """examples/django_shop's own tests pass: its views' events, and a live worker delivering to the fake Bento."""
    run_pytest(ROOT / "examples" / "django_shop")
