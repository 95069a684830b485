"""The standalone app: ``celery -A bento_tasks worker -B`` from the repository root.

Configured by the top-level ``celeryconfig.py``. Django projects do not use this module:
their own app runs the shared tasks.
"""

from celery import Celery

import bento_tasks  # noqa: F401  (registers the shared tasks with this app)

app = Celery("bento_tasks")
app.config_from_object("celeryconfig")
