"""Configuration of the standalone app (``celery -A bento_tasks worker -B``).

Broker from CELERY_BROKER_URL; the flush runs every BENTO_FLUSH_INTERVAL seconds.
A Django project puts the same values in its settings with the CELERY_ prefix instead.
"""

import os

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0")
task_default_queue = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Results are not used; without a backend nothing is written per task.
task_ignore_result = True
task_serializer = "json"
accept_content = ["json"]
# A worker fetches one message at a time, so a killed worker strands at most that one.
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True
# kombu's Redis default, stated because every retry countdown must stay far below it.
broker_transport_options = {"visibility_timeout": 3600}

beat_schedule = {
    "bento-flush": {
        "task": "bento_tasks.flush_events",
        "schedule": float(os.environ.get("BENTO_FLUSH_INTERVAL", "5")),
    },
}
