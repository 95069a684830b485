"""Django settings for tests/test_django_app.py (run under pytest-django by tests/test_django_suites.py)."""

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "bento_tasks"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

BENTO_SITE_UUID = "site-123"
BENTO_PUBLISHABLE_KEY = "pub-abc"
BENTO_SECRET_KEY = "sekrit-xyz"
BENTO_FLUSH_INTERVAL = 5.0
# Nothing listens here: tests that need Redis point this at their private server; the shared one on 6379
# is never touched (manage.py check reads the Redis's maxmemory-policy).
BENTO_REDIS_URL = "redis://127.0.0.1:9/0"
CELERY_BEAT_SCHEDULE = {"bento-flush": {"task": "bento_tasks.flush_events", "schedule": BENTO_FLUSH_INTERVAL}}
