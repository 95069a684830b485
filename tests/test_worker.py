"""What a worker logs when it starts (bento_tasks/worker.py), seen in a real ``celery worker`` process."""

from __future__ import annotations

import os

import pytest
from conftest import ROOT

from bento_tasks.testing import CeleryWorker

pytestmark = pytest.mark.slow

SETTINGS = """
SECRET_KEY = "worker-test"
INSTALLED_APPS = ["bento_tasks"]
BENTO_SITE_UUID = "site"
BENTO_PUBLISHABLE_KEY = "pub"
BENTO_SECRET_KEY = "secret"
BENTO_REDIS_URL = {redis_url!r}
CELERY_BROKER_URL = {broker_url!r}
"""

CELERY = """
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workerproj.settings")
app = Celery("workerproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""


def test_a_django_worker_logs_an_environment_variable_it_does_not_read_once_at_start(redis_url, broker_url, tmp_path):
    """A Django project's worker started with BENTO_API_URL exported (which its settings do not read) logs one
    warning at start naming the variable and where the value must go, before it reports ready."""
    project = tmp_path / "workerproj"
    project.mkdir()
    (project / "__init__.py").write_text("from .celery import app as celery_app\n")
    (project / "celery.py").write_text(CELERY)
    (project / "settings.py").write_text(SETTINGS.format(redis_url=redis_url, broker_url=broker_url))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),  # this checkout's bento_tasks
        "DJANGO_SETTINGS_MODULE": "workerproj.settings",
        "BENTO_API_URL": "http://127.0.0.1:8765/api/v1",
    }
    with CeleryWorker(app="workerproj", env=env, cwd=tmp_path, directory=tmp_path, beat=False) as worker:
        log = worker.output()
    line = "The environment variable BENTO_API_URL is set, but bento_tasks reads Django settings (workerproj.settings)"
    assert log.count(line) == 1, log
    assert 'BENTO_API_URL = os.environ["BENTO_API_URL"]' in log
    assert log.index(line) < log.index(" ready.")
