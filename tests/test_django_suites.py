"""The Django tests, each suite in its own pytest-django process.

Once Django is configured in a process, bento_tasks reads Django settings instead of the
environment, so these suites cannot share the main test process. A failure prints the suite's output.
A suite passes only if its tests ran: a skipped test fails it unless the suite allows that skip (``POSTGRES_ONLY``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

import pytest
from conftest import ROOT, has_redis_binary

# The only skips a suite may have. tests/test_outbox.py on MariaDB and SQLite: its one PostgreSQL test, which stops
# a relay between its Redis write and its delete with a table lock that lets SELECT ... FOR UPDATE through (neither
# has that lock mode); the other kill tests run everywhere. Any other skip fails the suite.
POSTGRES_ONLY = {"FOR UPDATE SKIP LOCKED and table locks: PostgreSQL": 1}


def run_pytest(cwd, *args: str, allowed_skips: Mapping[str, int] | None = None) -> None:
    """Run one suite; fail unless it passed and every test in it ran, or was skipped for a reason the caller
    allows: ``allowed_skips`` maps a skip reason's text to how many tests may skip with it."""
    # Settings come from each suite's Django settings module, never from this process's environment.
    leaks = ("BENTO_", "DJANGO_", "CELERY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaks) or k.startswith("BENTO_TESTS_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEsxX", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    where = f"pytest {' '.join(args)} in {cwd}"
    if done.returncode != 0:
        pytest.fail(f"{where} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    problems = suite_problems(done.stdout, allowed_skips or {})
    if problems:
        pytest.fail(f"{where}: {'; '.join(problems)}\n{done.stdout}", pytrace=False)


def suite_problems(output: str, allowed_skips: Mapping[str, int]) -> list[str]:
    """What is wrong with a suite's pytest -q -rfEsxX output besides failures: no summary, nothing passed, tests
    skipped for a reason not allowed (or more than allowed), xfailed/xpassed tests, errors."""
    lines = output.strip().splitlines()
    summary = lines[-1] if lines else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", summary)}
    if not re.search(r" in [\d.]+s", summary) or not counts:
        return [f"no pytest summary line (got {summary!r})"]
    problems = [f"{n} {word}" for word, n in counts.items() if word not in ("passed", "skipped")]
    if not counts.get("passed"):
        problems.append("no test passed")
    skips = [(int(n), reason) for n, reason in re.findall(r"^SKIPPED \[(\d+)\] \S+: (.*)$", output, re.MULTILINE)]
    if sum(n for n, _ in skips) != counts.get("skipped", 0):
        problems.append(f"{counts.get('skipped', 0)} skipped, but {sum(n for n, _ in skips)} skip reasons listed")
    left = dict(allowed_skips)
    for n, reason in skips:
        allowed = next((text for text in left if text in reason), None)
        if allowed is None or left[allowed] < n:
            problems.append(f"{n} test(s) skipped: {reason}")
        else:
            left[allowed] -= n
    return problems


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
    run_pytest(ROOT, "--ds=tests.django_outbox_mysql", "tests/test_outbox.py", allowed_skips=POSTGRES_ONLY)


def test_outbox_suite_passes_on_sqlite():
    """tests/test_outbox.py on SQLite (database files), where relays serialize on the write lock."""
    run_pytest(ROOT, "--ds=tests.django_outbox_sqlite", "tests/test_outbox.py", allowed_skips=POSTGRES_ONLY)


@pytest.mark.slow
def test_example_shop_suite_passes():
    """examples/django_shop's own tests pass: its views' events, and a live worker delivering to the fake Bento."""
    if not has_redis_binary() and os.environ.get("BENTO_TESTS_REQUIRE_REDIS") != "1":
        pytest.skip("the example's live tests need redis-server on PATH")
    run_pytest(ROOT / "examples" / "django_shop")


@pytest.mark.parametrize(
    ("output", "allowed", "problems"),
    [
        ("..s.\nSKIPPED [1] tests/t.py:9: needs PostgreSQL\n3 passed, 1 skipped in 1.0s", {"PostgreSQL": 1}, []),
        ("..\n2 passed, 1 warning in 0.5s", {}, []),
        ("s.\nSKIPPED [1] tests/t.py:9: no headless Chromium\n1 passed, 1 skipped in 1.0s", {}, ["1 test(s) skipped"]),
        ("ss\nSKIPPED [2] tests/t.py:3: needs PostgreSQL\n2 skipped in 0.1s", {"PostgreSQL": 2}, ["no test passed"]),
        ("ss.\nSKIPPED [2] tests/t.py:3: needs PostgreSQL\n1 passed, 2 skipped in 0.1s", {"PostgreSQL": 1}, ["2 test"]),
        (".x\nXFAIL tests/t.py::test_b\n1 passed, 1 xfailed in 0.1s", {}, ["1 xfailed"]),
        ("no tests ran in 0.01s", {}, ["no pytest summary line"]),
    ],
)
def test_a_suite_passes_only_when_its_tests_ran(output: str, allowed: dict[str, int], problems: list[str]):
    """A suite's run counts as passed only if some test passed and every skip is one it allows, no more often than
    allowed; an all-skipped suite, an xfail or a missing summary is a failure, whatever pytest's exit code."""
    found = suite_problems(output, allowed)
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found, strict=True)), found
