"""The shop's own Celery app, configured from Django settings alone; its beat runs the Bento flush and relay."""

import os

from celery import Celery

import bento_tasks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # also finds bento_tasks.tasks, through INSTALLED_APPS
# beat runs bento_tasks.flush_events and (BENTO_OUTBOX) bento_tasks.relay_outbox every BENTO_FLUSH_INTERVAL seconds
bento_tasks.add_flush_schedule(app)
