"""The Bento admin pages, the metrics view and ``manage.py bento``, against a real Redis.

Runs under pytest-django with tests/django_admin_settings.py (tests/test_django_suites.py starts it).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings

if not django_settings.configured:
    pytest.skip("needs Django: run by tests/test_django_suites.py under pytest-django", allow_module_level=True)

from conftest import ROOT, claim_events, free_port
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from bento_tasks import InvalidEvent, track
from bento_tasks.admin import REASONS
from bento_tasks.buffer import DeadLetter, DeadLetterFilter, get_buffer, new_token
from bento_tasks.client import Outcome, Verdict
from bento_tasks.conf import Settings
from bento_tasks.events import build_event, split_valid
from bento_tasks.policy import Action, Health, Kind, Record, after_death, decide, decide_held
from bento_tasks.telemetry import PostSample

pytestmark = pytest.mark.django_db

DEAD = "/admin/bento_tasks/deadletter/"
STATUS = "/admin/bento_tasks/status/"
REPORTS = "/admin/bento_tasks/failurereport/"
VIEW = ["view_status", "view_deadletter", "view_failurereport"]


@pytest.fixture
def buffer(settings, redis_url):
    settings.BENTO_REDIS_URL = redis_url
    return get_buffer()


def staff(username: str, *codenames: str, group: Group | None = None) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="bento_tasks", codename__in=codenames))
    if group is not None:
        user.groups.add(group)
    return user


def client_for(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def take(buffer, emails: list[str]):
    """Queue one event per email, claim the queue as one batch and take it as the post task does.

    Returns (batch id, token, Begin)."""
    for email in emails:
        track("signup", email)
    batch_id, _ = claim_events(buffer)
    token = new_token()
    return batch_id, token, buffer.begin(batch_id, token, interval=0, max_sleep=1)


def bury(buffer, emails: list[str], reason: str, status: int | None, attempts: int = 3) -> None:
    """Dead-letter one event per email, as the post task does after a refusal or exhausted retries."""
    batch_id, token, begin = take(buffer, emails)
    record = replace(begin.record, attempts=attempts, last_status=status)
    buffer.execute(batch_id, token, Action(Kind.BURY, record, reason=reason))


def refs(html: str) -> list[str]:
    return re.findall(r'name="selected" value="([^"]+)"', html)


def cli_status() -> dict:
    out = io.StringIO()
    call_command("bento", "status", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_admin_index_shows_a_bento_section_on_the_stock_and_a_custom_site(buffer):
    """Staff with the view permissions see a "Bento" app with status, dead letters and failure reports, on
    Django's stock admin and on a custom AdminSite alike."""
    client = client_for(staff("viewer", *VIEW))
    for prefix in ("/admin/", "/ops/"):
        page = client.get(prefix).content.decode()
        assert "Bento" in page
        for entry in ("status/", "deadletter/", "failurereport/"):
            assert f'href="{prefix}bento_tasks/{entry}"' in page
        assert client.get(f"{prefix}bento_tasks/status/").status_code == 200


def test_staff_without_bento_permissions_is_refused(buffer):
    """Staff without the permissions see no Bento section and get 403 on its pages (superuser-only is not the rule)."""
    client = client_for(staff("nobody"))
    assert "bento_tasks/" not in client.get("/admin/").content.decode()
    for url in (STATUS, DEAD, REPORTS):
        assert client.get(url).status_code == 403


def test_status_page_counts_match_status_json_and_never_show_the_secret(buffer):
    """The status page shows queued, in flight, dead, delivered and failed as `bento status --json` reports them,
    plus the last POSTs and a chart, and never the secret key."""
    bury(buffer, ["d@example.com"], "retries exhausted: 503", 503)
    track("signup", "inflight@example.com")
    buffer.claim()
    for i in range(3):
        track("signup", f"later{i}@example.com")
    buffer.record_post(PostSample(200, 7, 7, 0, 0.042, "ack"))
    buffer.record_depth()
    page = client_for(staff("viewer", *VIEW)).get(STATUS).content.decode()
    status = cli_status()
    for key in ("queued", "in_flight", "dead", "delivered", "failed"):
        shown = re.search(rf'id="status-{key}" data-value="(\d+)"', page)
        assert shown is not None and int(shown.group(1)) == status[key], key
    assert (status["queued"], status["in_flight"], status["dead"]) == (3, 1, 1)
    assert 'id="bento-posts"' in page and "0.042 s" in page
    assert "<svg" in page and "3 queued</title>" in page
    assert django_settings.BENTO_SECRET_KEY not in page


def test_status_page_and_metrics_show_the_outbox_and_the_last_flush_as_status_json(buffer, settings):
    """With the outbox on, the status page and the metrics show the rows waiting, the oldest's age and the last
    flush's age, as `status --json` does: one snapshot feeds all three."""
    from bento_tasks import outbox
    from bento_tasks.events import build_event, encode_event

    settings.BENTO_OUTBOX = True
    for i in range(2):
        outbox.write(encode_event(build_event("signup", f"o{i}@example.com"), 65536))
    buffer.mark_flushed()
    status = cli_status()
    assert status["outbox"] == 2 and status["outbox_oldest_age"] is not None and status["last_flush_age"] is not None
    page = client_for(staff("viewer", *VIEW)).get(STATUS).content.decode()
    assert 'id="status-outbox" data-value="2"' in page
    assert 'id="status-outbox_oldest_age"' in page and 'id="status-last_flush_age"' in page
    settings.BENTO_METRICS_TOKEN = "t"
    text = Client().get("/bento/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}
    assert values["bento_tasks_outbox_rows"] == 2
    assert values["bento_tasks_outbox_oldest_age_seconds"] == pytest.approx(status["outbox_oldest_age"], abs=5)
    assert values["bento_tasks_last_flush_age_seconds"] == pytest.approx(status["last_flush_age"], abs=5)


def test_status_page_says_when_redis_cannot_be_reached(settings):
    """With Redis down the status page answers 200 and names the problem instead of failing with a 500."""
    settings.BENTO_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    page = client_for(staff("viewer", *VIEW)).get(STATUS)
    assert page.status_code == 200
    assert re.search(r"Redis at 127\.0\.0\.1:\d+ db 0 is unavailable", page.content.decode())


def test_dead_letters_page_newest_first_in_windows(buffer):
    """Dead letters are listed newest first, 100 a page, with links to older pages and the oldest page."""
    bury(buffer, [f"u{i:03d}@example.com" for i in range(250)], "retries exhausted: 503", 503)
    client = client_for(staff("viewer", *VIEW))
    first = client.get(DEAD).content.decode()
    emails = re.findall(r'class="bento-email">([^<]+)<', first)
    assert len(emails) == 100 and emails[0] == "u249@example.com" and emails[-1] == "u150@example.com"
    assert "250 dead letters" in first
    older = re.search(r'href="\?before=(\d+)" id="bento-older"', first)
    assert older and older.group(1) == "150"
    last = client.get(DEAD, {"before": "50"}).content.decode()
    assert re.findall(r'class="bento-email">([^<]+)<', last)[0] == "u049@example.com"
    assert 'id="bento-older"' not in last


def test_dead_letters_filter_by_reason_status_and_email(buffer):
    """Filtering by reason, by HTTP status (or none) and searching by email show only the matching dead letters."""
    bury(buffer, ["a1@example.com", "a2@shop.test"], "retries exhausted: 503", 503)
    bury(buffer, ["b1@example.com"], "Bento refused the event: bad", 422)
    bury(buffer, ["c1@example.com"], "retries exhausted: ConnectionError", None)
    client = client_for(staff("viewer", *VIEW))

    def emails(**params) -> set[str]:
        return set(re.findall(r'class="bento-email">([^<]+)<', client.get(DEAD, params).content.decode()))

    assert emails(reason="Bento refused") == {"b1@example.com"}
    assert emails(status="503") == {"a1@example.com", "a2@shop.test"}
    assert emails(status="none") == {"c1@example.com"}
    assert emails(q="SHOP.test") == {"a2@shop.test"}
    assert emails(reason="retries exhausted", q="example") == {"a1@example.com", "c1@example.com"}
    assert emails(status="nonsense") == {"a1@example.com", "a2@shop.test", "b1@example.com", "c1@example.com"}


def reasons_the_code_writes() -> set[str]:
    """Every dead-letter reason the delivery code can write: policy.decide and after_death over a grid wide enough to
    reach each of their dead-letter branches, events.split_valid's rejections and the InvalidEvent of send_event."""
    settings = Settings(site_uuid="s", publishable_key="p", secret_key="k")
    now = 10_000.0
    outcomes = [
        Outcome(Verdict.RETRY, 503, detail="down"),
        Outcome(Verdict.RETRY, None, detail="ConnectionError: refused"),
        Outcome(Verdict.UNANSWERED, None, detail="ReadTimeout"),
        Outcome(Verdict.REFUSED, 422, detail='{"error": "no"}'),
        Outcome(Verdict.RATE_LIMITED, 429, retry_after=5),
        Outcome(Verdict.CONFIG, 401, detail="bad key"),
        Outcome(Verdict.DELIVERED, 200, accepted=1),
    ]
    records = [
        Record(size, now - 100, attempts, isolated, unanswered, deaths, failed_at)
        for size, attempts, isolated, unanswered, deaths, failed_at in itertools.product(
            (1, 1000), (0, 100), (0, 100), (0, 100), (0, 100), (None, now - 5)
        )
    ]
    healths = [
        Health(now=now),
        Health(now=now, accepted_at=now - 500),
        Health(now=now, accepted_at=now - 1),
        Health(now, now - 1, f"422 {outcomes[3].detail}", 100),
    ]
    actions = [decide(o, r, h, settings) for o, r, h in itertools.product(outcomes, records, healths)]
    actions += [after_death(record, now, settings) for record in records]
    actions += [decide_held(replace(r, held=True), h, settings) for r, h in itertools.product(records, healths)]
    written = {action.reason for action in actions if action.kind is Kind.BURY}
    _, rejected = split_valid([b"x" * 100, b"\xff not json", b'{"type": "t", "email": "not-an-email"}'], 50)
    written |= {reason for _, reason in rejected}
    try:
        build_event("", "not-an-email")
    except InvalidEvent as exc:
        written.add(str(exc))
    return written


def test_every_reason_the_code_writes_has_a_reason_filter(buffer):
    """Each dead-letter reason delivery can write (retries exhausted, unanswered, worker deaths, isolation, refusals,
    invalid events) is matched by one of the page's reason filters, and each filter matches one: none can drift."""
    written = reasons_the_code_writes()
    assert len(written) >= 8, written

    def matched(value: str, reason: str) -> bool:
        return DeadLetterFilter(reason=value).matches(DeadLetter(b"", b"{}", reason, None, 0, ""))

    filters = [value for value, _ in REASONS]
    assert [reason for reason in written if not any(matched(value, reason) for value in filters)] == []
    assert [value for value in filters if not any(matched(value, reason) for reason in written)] == []
    for value in ("unanswered", "worker died"):  # the README tells operators to replay these after a fix
        assert value in filters
    page = client_for(staff("viewer", *VIEW)).get(DEAD).content.decode()
    for value, label in REASONS:
        assert f'href="?{urlencode({"reason": value})}">{label}</a>' in page


def test_a_filtered_page_examines_a_bounded_window(buffer, monkeypatch):
    """A filter matching nothing recent reads at most MAX_SCAN entries per page and offers to search older ones."""
    from bento_tasks import admin as bento_admin

    monkeypatch.setattr(bento_admin, "MAX_SCAN", 300)
    bury(buffer, ["old@example.com"], "Bento refused the event: bad", 422)
    bury(buffer, [f"n{i}@example.com" for i in range(1000)], "retries exhausted: 503", 503)
    client = client_for(staff("viewer", *VIEW))
    page = client.get(DEAD, {"status": "422"}).content.decode()
    assert "0 matches among 300 of 1,001 dead letters searched" in page
    older = re.search(r'href="\?([^"]+)" id="bento-older"', page)
    assert older is not None
    pages = 1
    while "old@example.com" not in page:
        page = client.get(DEAD + "?" + older.group(1).replace("&amp;", "&")).content.decode()
        older = re.search(r'href="\?([^"]+)" id="bento-older"', page)
        pages += 1
        assert pages < 10
    assert pages == 4  # 300 + 300 + 300 + the last 101


def test_dead_letter_detail_shows_the_event_json(buffer):
    """A dead letter's page shows its reason, status and the event exactly as queued, as JSON."""
    track("signup", "detail@example.com", fields={"plan": "pro"})
    bury(buffer, [], 'Bento refused the event: {"error": "nope"}', 422, 1)  # the event just queued
    client = client_for(staff("viewer", *VIEW))
    link = re.search(r'href="(/admin/bento_tasks/deadletter/\d+/\w+/)"', client.get(DEAD).content.decode())
    assert link is not None
    page = client.get(link.group(1)).content.decode()
    assert "&quot;plan&quot;: &quot;pro&quot;" in page and "detail@example.com" in page
    assert "Bento refused the event" in page and "422" in page
    assert client.get("/admin/bento_tasks/deadletter/0/deadbeef/").status_code == 404


def test_view_permission_only_shows_no_actions_and_posts_are_refused(buffer):
    """A user with only the view permission sees no actions or checkboxes, and a replay or purge POST is 403."""
    bury(buffer, ["v@example.com"], "retries exhausted: 503", 503)
    viewer = client_for(staff("viewer", *VIEW))
    page = viewer.get(DEAD).content.decode()
    assert 'id="bento-action"' not in page and 'name="selected"' not in page
    operator = client_for(staff("operator", *VIEW, "change_deadletter"))
    [ref] = refs(operator.get(DEAD).content.decode())
    for action in ("replay_selected", "replay_matching", "purge_selected"):
        answer = viewer.post(DEAD, {"action": action, "selected": ref, "confirm": "yes"})
        assert answer.status_code == 403
    assert buffer.status()["dead"] == 1


def test_replay_selected_asks_first_then_requeues_only_those(buffer):
    """Replay selected shows a confirmation page (nothing moves), and the confirmed POST requeues just those."""
    bury(buffer, ["r1@example.com", "r2@example.com", "r3@example.com"], "retries exhausted: 503", 503)
    client = client_for(staff("operator", *VIEW, "change_deadletter"))
    page = client.get(DEAD).content.decode()
    chosen = refs(page)[:2]  # r3 and r2, newest first
    confirm = client.post(DEAD, {"action": "replay_selected", "selected": chosen})
    assert confirm.status_code == 200 and "go back on the queue" in confirm.content.decode()
    assert buffer.status()["dead"] == 3
    done = client.post(DEAD, {"action": "replay_selected", "selected": chosen, "confirm": "yes"}, follow=True)
    assert "2 event(s) put back on the queue" in done.content.decode()
    queued = [json.loads(raw)["email"] for raw in buffer.redis.lrange(buffer.queue_key, 0, -1)]
    assert sorted(queued) == ["r2@example.com", "r3@example.com"]
    assert [letter.email for letter in buffer.dead_letters()] == ["r1@example.com"]
    again = client.post(DEAD, {"action": "replay_selected", "selected": chosen, "confirm": "yes"}, follow=True)
    assert "No dead letter selected" in again.content.decode()
    assert buffer.status()["queued"] == 2


def test_replay_all_matching_the_filter(buffer):
    """ "Replay all matching" requeues every dead letter the filter matches, however many pages, and no other."""
    bury(buffer, [f"m{i}@example.com" for i in range(150)], "retries exhausted: 503", 503)
    bury(buffer, ["keep@example.com"], "Bento refused the event: bad", 422)
    group = Group.objects.create(name="bento operators")
    group.permissions.set(Permission.objects.filter(codename__in=[*VIEW, "change_deadletter"]))
    client = client_for(staff("grouped", group=group))  # permissions through a group only
    confirm = client.post(DEAD, {"action": "replay_matching", "status": "503"})
    assert "150 of the newest 151 of 151 dead letters match" in confirm.content.decode()
    assert buffer.status()["dead"] == 151
    done = client.post(DEAD, {"action": "replay_matching", "status": "503", "confirm": "yes"}, follow=True)
    assert "150 event(s) put back on the queue" in done.content.decode()
    assert buffer.status()["queued"] == 150
    assert [letter.email for letter in buffer.dead_letters()] == ["keep@example.com"]


def test_purge_selected_needs_the_delete_permission(buffer):
    """Purging needs the delete permission (change is not enough), asks first, then deletes only the selection."""
    bury(buffer, ["p1@example.com", "p2@example.com"], "retries exhausted: 503", 503)
    changer = client_for(staff("changer", *VIEW, "change_deadletter"))
    [newest, _] = refs(changer.get(DEAD).content.decode())
    assert changer.post(DEAD, {"action": "purge_selected", "selected": newest, "confirm": "yes"}).status_code == 403
    deleter = client_for(staff("deleter", *VIEW, "delete_deadletter"))
    page = deleter.get(DEAD).content.decode()
    assert 'value="purge_selected"' in page and 'value="replay_selected"' not in page
    confirm = deleter.post(DEAD, {"action": "purge_selected", "selected": newest})
    assert "deleted for good" in confirm.content.decode() and buffer.status()["dead"] == 2
    deleter.post(DEAD, {"action": "purge_selected", "selected": newest, "confirm": "yes"})
    assert [letter.email for letter in buffer.dead_letters()] == ["p1@example.com"]
    assert buffer.status()["queued"] == 0


def test_a_get_never_changes_anything(buffer):
    """GETs carrying action parameters, on the list, a detail or the status page, change nothing."""
    bury(buffer, ["g@example.com"], "retries exhausted: 503", 503)
    client = client_for(staff("admin", *VIEW, "change_deadletter", "delete_deadletter"))
    [ref] = refs(client.get(DEAD).content.decode())
    index, letter_id = ref.split(":")
    for url in (DEAD, f"{DEAD}{index}/{letter_id}/", STATUS):
        for action in ("replay_selected", "replay_matching", "purge_selected"):
            client.get(url, {"action": action, "selected": ref, "confirm": "yes"})
    assert (buffer.status()["dead"], buffer.status()["queued"]) == (1, 0)


def test_a_post_without_the_csrf_token_is_refused(buffer):
    """Replay and purge POSTs without Django's CSRF token get 403 and change nothing."""
    bury(buffer, ["c@example.com"], "retries exhausted: 503", 503)
    user = staff("admin", *VIEW, "change_deadletter", "delete_deadletter")
    [ref] = refs(client_for(user).get(DEAD).content.decode())
    strict = client_for(user, enforce_csrf_checks=True)
    for action in ("replay_selected", "purge_selected"):
        assert strict.post(DEAD, {"action": action, "selected": ref, "confirm": "yes"}).status_code == 403
    assert buffer.status()["dead"] == 1


def test_failure_reports_are_listed(buffer):
    """Batches Bento accepted with failed events are listed with their time, size and counts."""
    batch_id, token, begin = take(buffer, [f"f{i}@example.com" for i in range(3)])
    report = {"batch_size": 3, "results": 2, "failed": 1}
    buffer.execute(batch_id, token, Action(Kind.ACK, begin.record), report=report)
    page = client_for(staff("viewer", *VIEW)).get(REPORTS).content.decode()
    cells = re.findall(r'<td class="num">(\d+)</td>', page)
    assert cells == ["3", "2", "1"]


def test_metrics_view_needs_the_token_or_the_view_permission(buffer, settings):
    """bento_tasks:metrics answers 403 to strangers, 401 without the bearer token once one is set, and 200 to
    the token or to a user with the status view permission."""
    from django.urls import reverse

    url = reverse("bento_tasks:metrics")
    assert url == "/bento/metrics"
    assert Client().get(url).status_code == 403
    assert client_for(staff("viewer", *VIEW)).get(url).status_code == 200
    settings.BENTO_METRICS_TOKEN = "scrape-me"
    assert Client().get(url).status_code == 401
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answer = Client().get(url, HTTP_AUTHORIZATION="Bearer scrape-me")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain; version=")
    assert b"scrape-me" not in answer.content


def test_metrics_scrape_matches_status_json(buffer, settings):
    """Scraped with prometheus-client's parser, the metrics agree with `bento status --json` and the POSTs recorded."""
    bury(buffer, ["dead@example.com"], "retries exhausted: 503", 503)
    track("signup", "flight@example.com")
    buffer.claim()
    track("signup", "waiting@example.com", date="2020-01-01T00:00:00+00:00")
    buffer.record_post(PostSample(200, 10, 9, 1, 0.2, "ack"))
    buffer.record_post(PostSample(503, 10, 0, 0, 3.0, "retry"))
    buffer.record_post(PostSample(None, 10, 0, 0, 31.0, "retry"))
    buffer.record_post(PostSample(422, 2, 0, 0, 0.1, "split"))
    buffer.record_post(PostSample(422, 1, 0, 0, 0.1, "bury", dead_lettered=1))
    buffer.redis.set(buffer.paused_key, str(buffer.now() + 60))
    settings.BENTO_METRICS_TOKEN = "t"
    text = Client().get("/bento/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    status = cli_status()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("bento_tasks_queued_events") == status["queued"] == 1
    assert value("bento_tasks_in_flight_events") == status["in_flight"] == 1
    assert value("bento_tasks_dead_letter_events") == status["dead"] == 1
    assert value("bento_tasks_events_delivered_total") == status["delivered"]
    assert value("bento_tasks_events_failed_total") == status["failed"]
    assert value("bento_tasks_paused") == 1 and 0 < value("bento_tasks_pause_remaining_seconds") <= 60
    assert value("bento_tasks_oldest_queued_age_seconds") == pytest.approx(status["oldest_queued_age"], abs=5)
    assert value("bento_tasks_posts_total", status_class="2xx") == 1
    assert value("bento_tasks_posts_total", status_class="5xx") == 1
    assert value("bento_tasks_posts_total", status_class="error") == 1
    assert value("bento_tasks_posts_total", status_class="4xx") == 2
    assert value("bento_tasks_posts_total", status_class="429") == 0
    assert (value("bento_tasks_retries_total"), value("bento_tasks_splits_total")) == (2, 1)
    assert value("bento_tasks_events_dead_lettered_total") == 1
    assert value("bento_tasks_post_duration_seconds_bucket", le="0.25") == 3
    assert value("bento_tasks_post_duration_seconds_bucket", le="5.0") == 4
    assert value("bento_tasks_post_duration_seconds_bucket", le="+Inf") == 5
    assert value("bento_tasks_post_duration_seconds_count") == 5
    assert value("bento_tasks_post_duration_seconds_sum") == pytest.approx(34.4)


@pytest.fixture
def project(tmp_path, redis_server, buffer):
    """A settings module for subprocesses (`python -m django bento ...`) pointing at this test's Redis."""
    lines = ["from tests.django_admin_settings import *  # noqa: F403", f"BENTO_REDIS_URL = {redis_server.url(0)!r}"]
    (tmp_path / "project_settings.py").write_text("\n".join(lines) + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_", "DJANGO_", "CELERY_"))}
    django_env = {**base, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "DJANGO_SETTINGS_MODULE": "project_settings"}
    cli_env = {
        **base,
        "BENTO_SITE_UUID": "site-123",
        "BENTO_PUBLISHABLE_KEY": "pub-abc",
        "BENTO_SECRET_KEY": "sekrit-admin-do-not-show",
        "BENTO_REDIS_URL": redis_server.url(0),
    }

    def both(*args: str, **extra_env: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
        def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
            return subprocess.run(
                command, cwd=ROOT, env={**env, **extra_env}, capture_output=True, text=True, timeout=60
            )

        managed = run([sys.executable, "-m", "django", "bento", *args], django_env)
        cli = run([sys.executable, "-m", "bento_tasks", *args], cli_env)
        return managed, cli

    return both


def without_age(output: str) -> str:
    # The oldest event's age moves on between the two runs; the settings source is what differs by design.
    output = re.sub(r"(oldest_queued_age\s+)[\d.]+", r"\1<age>", output)
    output = re.sub(r"the oldest \d+s ago", "the oldest <age>s ago", output)
    return re.sub(r"(settings\s+).*", r"\1<source>", output)


def test_manage_py_bento_prints_and_exits_as_the_cli(project, buffer):
    """`manage.py bento` gives the same output and exit code as `bento-tasks` for status, dead, resume and errors."""
    bury(buffer, ["x@example.com"], "retries exhausted: 503", 503)
    track("signup", "old@example.com", date="2020-01-01T00:00:00+00:00")
    buffer.redis.set(buffer.paused_key, str(buffer.now() + 300))
    for args in (
        ("status", "--json"),
        ("status", "--check", "--max-age", "1e12"),  # exit 1: paused
        ("dead", "list"),
        ("dead", "replay"),  # exit 2: says which
        ("dead", "purge"),  # exit 2: no --yes without a terminal
        ("nonsense",),  # exit 2: argparse
    ):
        managed, cli = project(*args)
        if args == ("status", "--json"):
            mine, theirs = json.loads(managed.stdout), json.loads(cli.stdout)
            assert abs(mine.pop("oldest_queued_age") - theirs.pop("oldest_queued_age")) < 5
            assert (mine.pop("settings"), theirs.pop("settings")) == (
                "Django settings (project_settings)",
                "the environment",
            )
            assert mine == theirs
        else:
            assert without_age(managed.stdout) == without_age(cli.stdout), args
        assert (managed.returncode, without_age(managed.stderr)) == (cli.returncode, without_age(cli.stderr)), args
    assert project("status", "--check", "--max-age", "1e12")[0].returncode == 1
    managed, cli = project("resume")
    assert (managed.stdout, managed.returncode) == ("pause ended\n0 waiting batch(es) go at the next flush\n", 0)
    assert cli.stdout == "delivery was not paused\n0 waiting batch(es) go at the next flush\n"
    assert buffer.status()["paused_until"] is None


def test_manage_py_bento_flush_dispatches_through_the_broker(project, buffer, redis_server):
    """`manage.py bento flush --json` claims the queue's batches and sends post_batch messages to the broker."""
    import redis

    for i in range(3):
        track("signup", f"flush{i}@example.com")
    broker = redis_server.url(1)
    managed, _ = project("flush", "--json", CELERY_BROKER_URL=broker)
    assert managed.returncode == 0, managed.stderr
    assert json.loads(managed.stdout) == {"recovered": 0, "released": 0, "dispatched": 1}
    assert buffer.status()["in_flight"] == 3
    [message] = redis.Redis.from_url(broker).lrange("celery", 0, -1)
    assert json.loads(message)["headers"]["task"] == "bento_tasks.post_batch"
