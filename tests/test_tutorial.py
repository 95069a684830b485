"""The README's Django tutorial, followed literally: its code blocks, `bento-tasks fake-bento`, a real
`manage.py runserver`, `celery -A proj worker -B` and the status command, against a private Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, run_cli, wait_until

from bento_tasks.testing import CeleryWorker

pytestmark = pytest.mark.slow


def tutorial_blocks() -> dict[str, str]:
    """The python blocks of "From an empty project to a delivered event", by the file they go in."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From an empty project to a delivered event", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    settings, _bento_dict, celery, init, views = blocks
    return {"settings": settings, "celery": celery, "init": init, "views": views}


def make_project(directory: Path) -> None:
    """`django-admin startproject proj .`, then each step of the tutorial as the README words it."""
    subprocess.run([sys.executable, "-m", "django", "startproject", "proj", str(directory)], check=True, timeout=60)
    blocks = tutorial_blocks()
    settings = directory / "proj" / "settings.py"
    text, added = re.subn(
        r"""(['"])django\.contrib\.staticfiles\1,""", r"\g<0>\n    'bento_tasks',", settings.read_text()
    )
    assert added == 1
    settings.write_text(text + "\n" + blocks["settings"])
    (directory / "proj" / "celery.py").write_text(blocks["celery"])
    (directory / "proj" / "__init__.py").write_text(blocks["init"])
    (directory / "proj" / "views.py").write_text(blocks["views"])
    urls = directory / "proj" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import path\nfrom . import views")
    urls.write_text(text.replace("urlpatterns = [", 'urlpatterns = [\n    path("hello", views.hello),'))


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_the_readme_tutorial_delivers_an_event_to_the_fake_bento(redis_server, redis_url, tmp_path):
    """Following the README literally, with only the lines `bento-tasks fake-bento` prints and the Redis URLs
    exported: `manage.py check` finds no issue, the view answers 400 to a missing or bad email, and a good one
    reaches the fake Bento through the project's own worker."""
    make_project(tmp_path)
    fake_port, web_port = free_port(), free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bento_tasks", "fake-bento", "--port", str(fake_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    web = None
    try:
        exports = {}
        while len(exports) < 4:
            line = fake.stdout.readline()
            assert line, "fake-bento exited before printing its settings"
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = value
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),  # this checkout's bento_tasks, whatever is installed
            **exports,
            "BENTO_REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_server.url(1),
        }
        check = subprocess.run(
            [sys.executable, "manage.py", "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0 and "System check identified no issues" in check.stdout, check.stderr

        web = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: listening(web_port), 30, message="runserver")
        hello = f"http://127.0.0.1:{web_port}/hello"
        for bad in ("", "?email=not-an-address"):
            status, body = get(hello + bad)
            assert (status, list(body["fields"])) == (400, ["email"])
        with CeleryWorker(app="proj", env=env, cwd=tmp_path, directory=tmp_path, concurrency=1):
            assert get(hello + "?email=you@example.com") == (200, {"queued": True})
            deadline = time.monotonic() + 30
            line = fake.stdout.readline()
            while "200: 1 event(s) $completed_onboarding" not in line:
                assert time.monotonic() < deadline and line, "the fake never received the event"
                line = fake.stdout.readline()
            # The fake prints a request as it answers it; the worker counts the event as delivered only after
            # it has read that answer, so poll while the worker still runs.
            project_env = {
                **env,
                "DJANGO_SETTINGS_MODULE": "proj.settings",
                "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
            }
            snapshot = json.loads(run_cli(project_env, "status", "--json").stdout)
            deadline = time.monotonic() + 30
            while snapshot["delivered"] != 1:
                assert time.monotonic() < deadline, f"status never counted the event delivered: {snapshot}"
                time.sleep(0.5)
                snapshot = json.loads(run_cli(project_env, "status", "--json").stdout)
        assert (snapshot["delivered"], snapshot["queued"], snapshot["settings"]) == (
            1,
            0,
            "Django settings (proj.settings)",
        )
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        fake.send_signal(signal.SIGINT)
        fake.communicate(timeout=10)
