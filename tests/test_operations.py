"""What operators read, against the real Redis: the series and counters the tasks record, dead letters page by
page, replay and purge of chosen letters, and the CLI's flush and metrics commands (resume: test_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import redis
from conftest import BROKER_DB, ROOT, free_port, run_cli, wait_until
from prometheus_client.parser import text_string_to_metric_families

from bento_tasks import tasks, track
from bento_tasks.buffer import DeadLetterFilter, dead_letter_header, dead_letter_id
from bento_tasks.events import build_event, encode_event
from bento_tasks.telemetry import RECENT_POSTS, SERIES_TTL, PostSample, minute_of

NOW = 1_767_225_630.0  # 2026-01-01T00:00:30Z


def bury(buffer, emails, reason="retries exhausted: 503", status=503):
    """Dead letters as BURY writes them: the header line, then the event as queued."""
    header = dead_letter_header(reason, status, 2)
    buffer.redis.rpush(
        buffer.dead_key, *[header + b"\n" + encode_event(build_event("signup", e), 65536) for e in emails]
    )


def test_record_post_counts_keeps_the_minute_a_day_and_the_last_posts(buffer):
    """A POST adds to the counters and histogram, to this minute's series (with a TTL of about a day) and to the
    recent POSTs list, which keeps the last RECENT_POSTS."""
    for _ in range(RECENT_POSTS + 5):
        buffer.record_post(PostSample(200, 10, 10, 0, 0.2, "ack"), now=NOW)
    buffer.record_post(PostSample(503, 10, 0, 0, 1.5, "retry"), now=NOW + 60)
    counters = buffer.counters()
    assert counters["posts:2xx"] == RECENT_POSTS + 5 and counters["posts:5xx"] == 1 and counters["retries"] == 1
    assert counters["duration_bucket:0.25"] == RECENT_POSTS + 5 and counters["duration_bucket:2.5"] == 1
    assert counters["duration_sum"] == pytest.approx(0.2 * (RECENT_POSTS + 5) + 1.5)
    minute_key = f"{{bento}}:minute:{minute_of(NOW)}"
    assert SERIES_TTL - 5 < buffer.redis.ttl(minute_key) <= SERIES_TTL
    posts = buffer.recent_posts(limit=100)
    assert len(posts) == RECENT_POSTS and posts[0]["status"] == 503 and posts[0]["action"] == "retry"
    rows = buffer.series(minutes=3, now=NOW + 60)
    assert [row["delivered"] for row in rows] == [0, 10 * (RECENT_POSTS + 5), 0]
    assert [row["status_5xx"] for row in rows] == [0, 0, 1]


def test_record_depth_keeps_the_largest_in_the_minute(buffer):
    """The flush's depth sample keeps the minute's largest queue length; a minute with no flush reads None."""
    for i in range(7):
        track("signup", f"d{i}@example.com")
    assert buffer.record_depth(now=NOW) == 7
    buffer.redis.ltrim(buffer.queue_key, 0, 1)
    assert buffer.record_depth(now=NOW) == 2
    assert buffer.record_depth(now=NOW + 60) == 2
    assert [row["depth"] for row in buffer.series(minutes=3, now=NOW + 60)] == [None, 7, 2]


def test_the_post_task_records_outcomes_and_the_flush_the_depth(buffer, dispatches, fake):
    """Run for real against the fake: a 503 then a 200 are two POSTs (one retry), a 422 on a batch of two is a
    split, then one event delivered and one dead-lettered; the flush noted the queue's depth."""
    for i in range(2):
        track("signup", f"ok{i}@example.com")
    tasks.flush_events.run()
    fake.fail(503, times=1)
    dispatches.run_all()
    track("signup", "good@example.com")
    track("signup", "poison@example.com")
    fake.reject_events(lambda event: event["email"] == "poison@example.com")
    tasks.flush_events.run()
    dispatches.run_all()
    counters = buffer.counters()
    assert (counters["posts:2xx"], counters["posts:5xx"], counters["posts:4xx"]) == (2, 1, 2)
    assert (counters["retries"], counters["splits"], counters["dead_lettered"]) == (1, 1, 1)
    assert sum(v for k, v in counters.items() if k.startswith("duration_bucket:")) == 5
    [row] = buffer.series(minutes=1)
    assert row["delivered"] == 3 and row["posts"] == 5 and row["status_5xx"] == 1 and row["depth"] == 2
    assert [post["action"] for post in buffer.recent_posts()] == ["bury", "ack", "split", "ack", "retry"]


def test_invalid_events_count_as_dead_lettered(buffer, dispatches):
    """Events the post task rejects before posting add to the dead-lettered counter too."""
    buffer.push(b'{"type":"t","email":"not-an-email"}')
    tasks.flush_events.run()
    assert dispatches.run_all() == ["rejected"]
    assert buffer.counters()["dead_lettered"] == 1 and buffer.status()["dead"] == 1


def test_pages_of_dead_letters_read_only_windows(buffer, monkeypatch):
    """Paging 2,500 dead letters reads LRANGE windows of at most the page (unfiltered) or 1000 entries
    (filtered, up to max_scan), never the whole list; every letter is seen exactly once."""
    bury(buffer, [f"p{i}@example.com" for i in range(2000)])
    bury(buffer, [f"r{i}@example.com" for i in range(500)], "Bento refused the event: no", 422)
    spans: list[int] = []
    real = buffer.redis.lrange
    monkeypatch.setattr(buffer.redis, "lrange", lambda key, a, b: spans.append(b - a + 1) or real(key, a, b))
    seen, before = [], None
    while True:
        page = buffer.scan_dead(DeadLetterFilter(), before, want=100)
        seen += [letter.email for _, letter in page.letters]
        if page.before is None:
            break
        before = page.before
    assert len(seen) == len(set(seen)) == 2500 and seen[0] == "r499@example.com" and max(spans) == 100
    spans.clear()
    found, before, pages = [], None, 0
    while True:
        page = buffer.scan_dead(DeadLetterFilter(status="503"), before, want=100, max_scan=600)
        found += [letter.email for _, letter in page.letters]
        pages += 1
        assert page.scanned <= 600
        if page.before is None:
            break
        before = page.before
    assert sorted(found) == sorted(f"p{i}@example.com" for i in range(2000)) and max(spans) <= 600


def test_chosen_dead_letters_are_found_after_their_indices_shift(buffer):
    """A letter named by (index, id) is found though letters before it were replayed since the page was read."""
    bury(buffer, [f"s{i}@example.com" for i in range(10)])
    letters = list(enumerate(buffer.dead_letters()))
    target = (9, dead_letter_id(letters[9][1].raw))
    assert buffer.replay_letters([letters[2], letters[0], letters[1]]) == 3
    assert [json.loads(raw)["email"] for raw in buffer.redis.lrange(buffer.queue_key, 0, -1)] == [
        "s2@example.com",
        "s0@example.com",
        "s1@example.com",
    ]
    [(index, found)] = buffer.find_dead_letters([target])
    assert index == 6 and found.email == "s9@example.com"
    assert buffer.find_dead_letters([(6, "0" * 20)]) == [None]
    assert buffer.purge_letters([(9, found), (6, found)]) == 1  # a stale index is looked up; the second is gone
    assert buffer.replay_letters([letters[0]]) == 0
    assert [letter.email for letter in buffer.dead_letters()] == [f"s{i}@example.com" for i in (3, 4, 5, 6, 7, 8)]
    assert buffer.status()["queued"] == 3


LETTERS = [
    ("retries exhausted: 503", 503, b'{"type":"t","email":"Ann@Example.com"}'),
    ("retries exhausted: ConnectionError", None, b'{"type":"t","email":"bob@shop.test"}'),
    ("Bento refused the event: bad", 422, b'{"type":"t","email":"\\u00e9lodie@example.com"}'),
    ("invalid Bento event: _event: not valid UTF-8 JSON", None, b"\xff\xfe not json"),
    ("invalid Bento event: email: Not a valid email address.", None, b'{"type":"t","email":["x"]}'),
    ("Bento refused the event: big", 413, b'[{"email":"carl@example.com"}]'),
    ('Bento refused the event: {"status":422}', 503, b'{"type":"t","email":"d@x.io","details":{"status":422}}'),
]


@pytest.mark.parametrize(
    "where",
    [
        DeadLetterFilter(),
        DeadLetterFilter(reason="retries exhausted"),
        DeadLetterFilter(reason="RETRIES"),
        DeadLetterFilter(status="none"),
        DeadLetterFilter(status="422"),
        DeadLetterFilter(status="503"),
        DeadLetterFilter(email="EXAMPLE.COM"),
        DeadLetterFilter(email="élodie"),
        DeadLetterFilter(reason="Bento refused", status="413"),
        DeadLetterFilter(reason="invalid", email="x"),
    ],
    ids=repr,
)
def test_replay_in_lua_takes_exactly_what_the_page_filter_shows(buffer, where, monkeypatch):
    """REPLAY (Lua, in windows) moves exactly the letters DeadLetterFilter.matches (Python) selects, keeps the
    others in order and queues the replayed events in dead-letter order, corrupt entries included."""
    from bento_tasks import buffer as buffer_module

    monkeypatch.setattr(buffer_module, "REPLAY_WINDOW", 3)  # several windows over the 8 letters
    for reason, status, event in LETTERS:
        buffer.redis.rpush(buffer.dead_key, dead_letter_header(reason, status, 1) + b"\n" + event)
    # a header written with json.dumps' default separators (spaces) matches the same way
    spaced = json.dumps({"reason": "retries exhausted: 503", "status": 503, "attempts": 1, "time": "t"})
    buffer.redis.rpush(buffer.dead_key, spaced.encode() + b'\n{"type":"t","email":"spaced@example.com"}')
    expected = [letter.event for letter in buffer.dead_letters() if where.matches(letter)]
    kept = [letter.raw for letter in buffer.dead_letters() if not where.matches(letter)]
    assert buffer.replay(where) == len(expected)
    assert buffer.redis.lrange(buffer.queue_key, 0, -1) == expected
    assert buffer.redis.lrange(buffer.dead_key, 0, -1) == kept


def test_flush_command_dispatches_through_the_broker(bento_env, buffer, redis_server):
    """`bento-tasks flush` claims the queue and sends post_batch messages through CELERY_BROKER_URL."""
    for i in range(2000):
        track("signup", f"f{i}@example.com")
    broker = redis_server.url(BROKER_DB)
    done = run_cli({**bento_env, "CELERY_BROKER_URL": broker}, "flush")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "recovered 0 batch(es), released 0 deferred batch(es), dispatched 2 batch(es)\n"
    assert buffer.status()["in_flight"] == 2000
    assert redis.Redis.from_url(broker).llen("celery") == 2


@pytest.fixture
def metrics_server(bento_env):
    """`bento-tasks metrics --port N` running, with BENTO_METRICS_TOKEN set; returns its URL."""
    port = free_port()
    env = {**bento_env, "BENTO_METRICS_TOKEN": "scrape-token"}
    command = [sys.executable, "-m", "bento_tasks", "metrics", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"serving bento-tasks metrics on {url}\n"
        yield url
    finally:
        process.terminate()
        process.wait(10)


def scrape(url: str, token: str | None = "scrape-token") -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return answer.read().decode()


def test_metrics_server_scrape_matches_status_json(bento_env, buffer, metrics_server, dispatches, fake):
    """Scraped with prometheus-client's parser, `bento-tasks metrics` agrees with `status --json`."""
    for i in range(30):
        track("signup", f"m{i}@example.com")
    tasks.flush_events.run()
    dispatches.run_all()
    bury(buffer, ["dead@example.com"])
    for i in range(3):
        track("signup", f"q{i}@example.com")
    status = json.loads(run_cli(bento_env, "status", "--json").stdout)
    text = scrape(metrics_server)
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    assert values["bento_tasks_queued_events"] == status["queued"] == 3
    assert values["bento_tasks_in_flight_events"] == status["in_flight"] == 0
    assert values["bento_tasks_dead_letter_events"] == status["dead"] == 1
    assert values["bento_tasks_events_delivered_total"] == status["delivered"] == 30
    assert values["bento_tasks_events_failed_total"] == status["failed"] == 0
    assert values["bento_tasks_paused"] == 0
    assert values["bento_tasks_post_duration_seconds_count"] == 1
    assert values["bento_tasks_oldest_queued_age_seconds"] == pytest.approx(status["oldest_queued_age"], abs=5)
    assert bento_env["BENTO_SECRET_KEY"] not in text


def test_metrics_server_wants_the_token_and_says_when_redis_is_down(bento_env, buffer, metrics_server, redis_server):
    """Without the bearer token the server answers 401; with Redis unreachable a scrape gets 503, so Prometheus'
    `up` goes to 0."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(metrics_server, token=None)
    assert refused.value.code == 401
    env = {**bento_env, "BENTO_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "BENTO_METRICS_TOKEN": "t"}
    port = free_port()
    command = [sys.executable, "-m", "bento_tasks", "metrics", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("serving")
        with pytest.raises(urllib.error.HTTPError) as down:
            scrape(f"http://127.0.0.1:{port}/metrics", token="t")
        assert down.value.code == 503 and b" is unavailable" in down.value.read()
    finally:
        process.terminate()
        process.wait(10)


def test_metrics_command_without_prometheus_client_says_what_to_install(bento_env, tmp_path):
    """Without the prometheus extra, `bento-tasks metrics` exits 2 naming the package to install."""
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    env = {**bento_env, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bento_tasks", "metrics"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "pip install 'bento-tasks[prometheus]'" in done.stderr


def test_importing_bento_tasks_needs_no_django(tmp_path):
    """The package, its CLI, buffer and metrics import without Django installed (Django stays optional)."""
    (tmp_path / "django.py").write_text("raise ImportError('no django here')\n")
    code = "import bento_tasks, bento_tasks.cli, bento_tasks.prometheus, bento_tasks.chart; print('ok')"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout == "ok\n", done.stderr


def test_a_worker_records_posts_for_operators(start_worker, buffer, fake):
    """With a live worker, the status counts, the counters and this minute's series agree after a delivery."""
    start_worker()
    for i in range(50):
        track("signup", f"live{i}@example.com")
    fake.wait_for_events(50)
    wait_until(lambda: buffer.status()["delivered"] == 50, 10, message="the deliveries acknowledged")
    wait_until(
        lambda: buffer.counters().get("posts:2xx") == buffer.status()["batches_delivered"],
        10,
        message="each delivered batch's POST recorded",
    )
    assert sum(row["delivered"] for row in buffer.series(minutes=2)) == 50
