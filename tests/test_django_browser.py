"""The Bento admin in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium,
against pytest-django's live server, with a live Celery worker delivering to the fake Bento.

Runs under pytest-django with tests/django_admin_settings.py (tests/test_django_suites.py starts it).
Screenshots go to .artifacts/. Without a browser the test is skipped, unless BENTO_TESTS_REQUIRE_BROWSER=1
(as .ci/run sets): then it fails.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

if not django_settings.configured:
    pytest.skip("needs Django: run by tests/test_django_suites.py under pytest-django", allow_module_level=True)

from conftest import BROKER_DB, ROOT, wait_until
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from bento_tasks import track
from bento_tasks.buffer import dead_letter_header, get_buffer
from bento_tasks.events import build_event, encode_event
from bento_tasks.testing import CeleryWorker, FakeBento

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / ".artifacts"
VIEW = ["view_status", "view_deadletter", "view_failurereport"]


@pytest.fixture
def browser(tmp_path) -> Iterator:
    """Headless Chromium with a fresh profile; skipped without one unless BENTO_TESTS_REQUIRE_BROWSER=1."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
        if missing:
            raise FileNotFoundError(f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:
        if os.environ.get("BENTO_TESTS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BENTO_TESTS_REQUIRE_BROWSER=1 but headless Chromium cannot run: {exc}", pytrace=False)
        pytest.skip(f"no headless Chromium: {exc}")
    driver.set_window_size(1280, 1500)
    yield driver
    driver.quit()


@pytest.fixture
def live_pipeline(settings, redis_url, redis_server, bento_fake: FakeBento, tmp_path) -> Iterator[FakeBento]:
    """This process and a live `celery -A bento_tasks worker -B` share the private Redis and the fake Bento."""
    settings.BENTO_REDIS_URL = redis_url
    env = {
        "PATH": os.environ["PATH"],
        "BENTO_SITE_UUID": bento_fake.site_uuid,
        "BENTO_PUBLISHABLE_KEY": bento_fake.publishable_key,
        "BENTO_SECRET_KEY": bento_fake.secret_key,
        "BENTO_API_URL": bento_fake.url,
        "BENTO_REDIS_URL": redis_url,
        "BENTO_RATE_LIMIT": "0",
        "BENTO_FLUSH_INTERVAL": "0.5",
        "BENTO_RETRY_BACKOFF": "0.2",
        "BENTO_RETRY_BACKOFF_MAX": "1",
        "CELERY_BROKER_URL": redis_server.url(BROKER_DB),
    }
    with CeleryWorker(env=env, cwd=ROOT, directory=tmp_path, concurrency=1):
        yield bento_fake


def dead_letter(email: str, reason: str, status: int | None) -> bytes:
    """A dead letter as the post task writes one (header line, then the event as queued)."""
    event = encode_event(build_event("signup", email), 65536)
    return dead_letter_header(reason, status, 3) + b"\n" + event


def click_through(browser, element: WebElement, by: str, value: str, timeout: float = 10) -> WebElement:
    """Click a link or button that loads another page; return the element ``(by, value)`` of that page, once the
    old page is gone (so nothing is read from it) and the new one has the element."""
    old_page = browser.find_element("tag name", "html")
    element.click()
    wait = WebDriverWait(browser, timeout)
    wait.until(expected_conditions.staleness_of(old_page))
    return wait.until(expected_conditions.presence_of_element_located((by, value)))


def log_in(browser, live_server, username: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element("id", "id_username").send_keys(username)
    browser.find_element("id", "id_password").send_keys("pw")
    click_through(browser, browser.find_element("css selector", "input[type=submit]"), "id", "content-main")
    assert browser.current_url.endswith("/admin/"), browser.current_url


def cli_status() -> dict:
    out = io.StringIO()
    call_command("bento", "status", "--json", stdout=out)
    return json.loads(out.getvalue())


def screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert browser.save_screenshot(str(path)), path
    return path


@pytest.mark.django_db(transaction=True)
def test_operators_read_the_status_and_replay_a_dead_letter_in_a_browser(browser, live_server, live_pipeline):
    """A view-only user reads the status page (its counts match `bento status --json`) and sees no replay
    action; an operator whose group has the change permission filters the dead letters, replays one through
    the confirmation page, and a live worker delivers it to the fake Bento."""
    fake = live_pipeline
    buffer = get_buffer()
    group = Group.objects.create(name="Bento operators")
    group.permissions.set(Permission.objects.filter(codename__in=[*VIEW, "change_deadletter"]))
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=VIEW))
    User.objects.create_user("operator", password="pw", is_staff=True).groups.add(group)

    # Some history for the chart: an outage of two 503s, then 300 events delivered.
    fake.fail(503, times=2)
    for i in range(300):
        track("signup", f"shopper{i}@example.com")
    fake.wait_for_events(300)
    wait_until(lambda: buffer.status()["delivered"] == 300, 10, message="the 300 deliveries acknowledged")
    outage = [
        dead_letter(f"outage{i}@example.com", "retries exhausted: 503 Service Unavailable", 503) for i in range(5)
    ]
    refused = [
        dead_letter(f"refused{i}@example.com", 'Bento refused the event: {"error": "bad"}', 422) for i in range(3)
    ]
    buffer.redis.rpush(buffer.dead_key, *outage, *refused)
    # A pause holds 40 new events in flight, so the counts stay still while the pages are read.
    buffer.redis.set(buffer.paused_key, str(buffer.now() + 600))
    for i in range(40):
        track("signup", f"held{i}@example.com")
    wait_until(lambda: buffer.status()["in_flight"] == 40, 10, message="the held events claimed")

    log_in(browser, live_server, "viewer")
    index = browser.find_element("id", "content-main").text
    assert "BENTO" in index.upper() and "Dead letters" in index and "Failure reports" in index
    click_through(browser, browser.find_element("link text", "Status"), "id", "status-queued")
    before = cli_status()
    shown = {
        key: int(browser.find_element("id", f"status-{key}").get_attribute("data-value"))
        for key in ("queued", "in_flight", "dead", "delivered", "failed")
    }
    after = cli_status()
    assert shown == {key: before[key] for key in shown} == {key: after[key] for key in shown}
    assert shown == {"queued": 0, "in_flight": 40, "dead": 8, "delivered": 300, "failed": 0}
    assert "Delivery is paused until" in browser.find_element("id", "bento-paused").text
    assert browser.find_elements("css selector", "#bento-chart svg rect.delivered")
    assert browser.find_elements("css selector", "#bento-chart svg rect.status_5xx")
    assert fake.secret_key not in browser.page_source
    screenshot(browser, "admin-status.png")

    browser.get(f"{live_server.url}/admin/bento_tasks/deadletter/")
    assert len(browser.find_elements("css selector", "tr.bento-letter")) == 8
    assert not browser.find_elements("id", "bento-action")  # view only: no replay
    assert not browser.find_elements("css selector", "input[name=selected]")

    buffer.resume()  # as `manage.py bento resume` does: the held events go out, replays will too
    log_in(browser, live_server, "operator")
    browser.get(f"{live_server.url}/admin/bento_tasks/deadletter/")
    click_through(browser, browser.find_element("link text", "Refused by Bento"), "css selector", "tr.bento-letter")
    rows = browser.find_elements("css selector", "tr.bento-letter")
    emails = [row.find_element("css selector", ".bento-email").text for row in rows]
    assert emails == ["refused2@example.com", "refused1@example.com", "refused0@example.com"]
    rows[0].find_element("css selector", "input[name=selected]").click()
    screenshot(browser, "admin-dead-letters.png")

    Select(browser.find_element("id", "bento-action")).select_by_value("replay_selected")
    confirm = click_through(browser, browser.find_element("id", "bento-go"), "id", "bento-confirm-what")
    assert "go back on the queue" in confirm.text
    assert buffer.status()["dead"] == 8  # nothing happens before the confirmation
    done = click_through(browser, browser.find_element("id", "bento-yes"), "css selector", ".messagelist")
    assert "1 event(s) put back on the queue" in done.text
    wait_until(
        lambda: any(event["email"] == "refused2@example.com" for event in fake.events),
        30,
        message="the replayed event delivered by the worker",
    )
    assert buffer.status()["dead"] == 7
    wait_until(lambda: buffer.status()["delivered"] == 341, 10, message="the held and the replayed events acknowledged")
