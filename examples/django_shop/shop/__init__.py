# Importing the Celery app here (Celery's Django recipe) makes it the current app wherever Django
# loads, so `manage.py check` sees the beat schedule it adds.
from .celery import app as celery_app

__all__ = ("celery_app",)
