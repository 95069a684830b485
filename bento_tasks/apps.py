"""The Django app: ``INSTALLED_APPS += ["bento_tasks"]`` registers the system checks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed

from . import conf


class BentoTasksConfig(AppConfig):
    name = "bento_tasks"
    verbose_name = "Bento"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings, "bento_tasks")
        setting_changed.connect(_forget_resolved_settings, dispatch_uid="bento_tasks.settings")


def _forget_resolved_settings(setting: str, **kwargs: Any) -> None:
    # override_settings and pytest-django's `settings` fixture change settings while the process runs.
    if setting == "BENTO" or setting.startswith("BENTO_"):
        conf.reset_settings()
