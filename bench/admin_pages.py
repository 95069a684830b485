"""Admin page timings with 100,000 dead letters: ``python -m bench.admin_pages`` (``make bench-admin``).

Each page is rendered by Django's test client in this process against a private ``redis-server``,
the median of several runs, with two baselines measured in the same run: the same page with 100 dead
letters (is paging flat?) and what one full ``LRANGE`` of the list plus parsing costs (what a page
reading the whole list would pay at least). ``--smoke`` runs it with 10,000 for CI. Numbers are
printed, never asserted; the exit status is non-zero only if a page answers something other than 200
or a replay moves the wrong number of letters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import django
from django.conf import settings
from django.urls import include, path

from bento_tasks.testing import RedisServer

urlpatterns: list = []  # filled once Django is configured (ROOT_URLCONF points here)


def configure(redis_url: str) -> None:
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="bench.admin_pages",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "bento_tasks",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        BENTO_SITE_UUID="bench",
        BENTO_PUBLISHABLE_KEY="bench",
        BENTO_SECRET_KEY="bench",
        BENTO_REDIS_URL=redis_url,
        STATIC_URL="/static/",
    )
    django.setup()
    import importlib

    from django.contrib import admin

    # Django imports ROOT_URLCONF by name: under `python -m` that is another module object than __main__.
    urls = importlib.import_module("bench.admin_pages")
    urls.urlpatterns[:] = [path("admin/", admin.site.urls), path("bento/", include("bento_tasks.urls"))]


def fill(buffer, count: int) -> None:
    """``count`` dead letters: 1% refused by Bento (422), the rest retries exhausted (503)."""
    from bento_tasks.buffer import dead_letter_header

    buffer.redis.delete(buffer.dead_key, buffer.queue_key)
    outage = dead_letter_header("retries exhausted: 503 Service Unavailable", 503, 41)
    refused = dead_letter_header('Bento refused the event: {"error": "invalid"}', 422, 1)
    chunk = []
    for n in range(count):
        header = refused if n % 100 == 7 else outage
        event = f'{{"type":"$purchase","email":"user{n}@example.com","details":{{"unique":{{"key":"order-{n}"}}}}}}'
        chunk.append(header + b"\n" + event.encode())
        if len(chunk) == 10_000:
            buffer.redis.rpush(buffer.dead_key, *chunk)
            chunk = []
    if chunk:
        buffer.redis.rpush(buffer.dead_key, *chunk)


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="10,000 dead letters and fewer runs (CI)")
    args = parser.parse_args(argv)
    big, runs = (10_000, 3) if args.smoke else (100_000, 15)
    broken: list[str] = []
    with RedisServer(tempfile.mkdtemp(prefix="bento-bench-admin-")) as server:
        configure(server.url(0))
        from django.contrib.auth.models import Permission, User
        from django.core.management import call_command
        from django.test import Client

        from bento_tasks.buffer import DeadLetterFilter, _parse_dead_letter, get_buffer

        call_command("migrate", verbosity=0)
        user = User.objects.create_user("ops", password="pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="bento_tasks"))
        client = Client()
        client.force_login(user)
        buffer = get_buffer()
        dead = "/admin/bento_tasks/deadletter/"
        pages: list[tuple[str, str, dict[str, str]]] = [
            ("status page", "/admin/bento_tasks/status/", {}),
            ("dead letters, newest page", dead, {}),
            ("dead letters, a middle page", dead, {"before": "{middle}"}),
            ("dead letters, oldest page", dead, {"before": "100"}),
            ("filter status=503 (99% match)", dead, {"status": "503"}),
            ("filter status=422 (1% match)", dead, {"status": "422"}),
            ("filter status=404 (no match: 10,000 scanned)", dead, {"status": "404"}),
            ("search email user4242", dead, {"q": "user4242@"}),
            ("a dead letter's page", "{detail}", {}),
            ("metrics scrape", "/bento/metrics", {}),
        ]

        def get(url: str, params: dict[str, str], size: int) -> Callable[[], object]:
            detail = f"{dead}{size - 1}/{_letter_id(buffer, size - 1)}/"
            url = url.replace("{detail}", detail)
            params = {k: v.replace("{middle}", str(size // 2)) for k, v in params.items()}

            def call() -> object:
                answer = client.get(url, params)
                if answer.status_code != 200:
                    broken.append(f"{url} {params}: {answer.status_code}")
                return answer

            return call

        results: dict[int, list[float]] = {}
        for size in (100, big):
            fill(buffer, size)
            results[size] = [median_ms(get(url, params, size), runs) for _, url, params in pages]
        full_read = median_ms(
            lambda: [_parse_dead_letter(raw) for raw in buffer.redis.lrange(buffer.dead_key, 0, -1)], max(3, runs // 3)
        )
        # Actions: a page's selection (100 letters), and "replay all matching" on the 1% and on everything.
        page = buffer.scan_dead(DeadLetterFilter(), None, 100)
        started = time.perf_counter()
        moved = buffer.replay_letters(page.letters)
        replay_page = (time.perf_counter() - started) * 1000
        refused = sum(1 for _, letter in buffer.scan_dead(DeadLetterFilter(status="422"), None, big, big).letters)
        started = time.perf_counter()
        matched = buffer.replay(DeadLetterFilter(status="422"))
        replay_filtered = (time.perf_counter() - started) * 1000
        left = buffer.redis.llen(buffer.dead_key)
        started = time.perf_counter()
        everything = buffer.replay(DeadLetterFilter())
        replay_all = (time.perf_counter() - started) * 1000
        if (moved, matched, everything) != (100, refused, left):
            broken.append(f"replays moved {moved}, {matched}, {everything}; expected 100, {refused}, {left}")

    print(f"Admin pages, median of {runs} runs, Django {django.get_version()}, Python {sys.version.split()[0]}")
    print(f"{'page':<48} {'100 letters':>12} {f'{big:,} letters':>16} {'ratio':>7}")
    for (name, _, _), small_ms, big_ms in zip(pages, results[100], results[big], strict=True):
        print(f"{name:<48} {small_ms:>9.1f} ms {big_ms:>13.1f} ms {big_ms / small_ms:>6.2f}x")
    print(f"{f'baseline: one full LRANGE + parse of {big:,}':<48} {'':>12} {full_read:>13.1f} ms")
    print(f"{'replay a selected page (100 letters)':<48} {'':>12} {replay_page:>13.1f} ms")
    print(f"{f'replay all matching status=422 ({refused:,})':<48} {'':>12} {replay_filtered:>13.1f} ms")
    print(f"{f'replay all matching, no filter ({left:,})':<48} {'':>12} {replay_all:>13.1f} ms")
    for problem in broken:
        print(f"BROKEN: {problem}", file=sys.stderr)
    return 1 if broken else 0


def _letter_id(buffer, index: int) -> str:
    from bento_tasks.buffer import dead_letter_id

    return dead_letter_id(buffer.redis.lindex(buffer.dead_key, index))


if __name__ == "__main__":
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    sys.exit(main())
