"""Settings of the example shop. The lines bento-tasks needs are under "Bento" and "Celery"."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "bento_tasks",  # system checks for the settings below (manage.py check)
    "shop",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "shop.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# Bento: every value from the environment, never from the repository. Under Django, bento_tasks reads
# only these settings, so a BENTO_* variable counts only through a line here (manage.py check warns otherwise).
BENTO_SITE_UUID = os.environ.get("BENTO_SITE_UUID", "")
BENTO_PUBLISHABLE_KEY = os.environ.get("BENTO_PUBLISHABLE_KEY", "")
BENTO_SECRET_KEY = os.environ.get("BENTO_SECRET_KEY", "")
BENTO_API_URL = os.environ.get("BENTO_API_URL", "https://app.bentonow.com/api/v1")
BENTO_REDIS_URL = os.environ.get("BENTO_REDIS_URL", "redis://localhost:6379/0")
# Events sent on commit are written into the outbox table (bento_tasks' migration) in the checkout's own
# transaction, then relayed to Redis: a Redis outage at checkout loses nothing and fails no request.
BENTO_OUTBOX = True

# Celery: read by shop/celery.py (namespace "CELERY"). The beat entries (flush, outbox relay) are added there.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/1")
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a killed worker strands at most one message
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
