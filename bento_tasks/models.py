"""Models of the Django app.

The three admin entries are unmanaged models: no table is ever created or read (their pages read
Redis), but Django gives each one permissions, so who may view, replay or purge is set with users
and groups like any other admin page: view for the pages, change to replay dead letters, delete to
purge them.
"""

from __future__ import annotations

from django.db import models


class Status(models.Model):
    """The admin's status page (view permission)."""

    id = models.AutoField(primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "status"
        verbose_name_plural = "status"


class DeadLetter(models.Model):
    """The admin's dead letters: view to list, change to replay, delete to purge."""

    id = models.AutoField(primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view", "change", "delete")
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"


class FailureReport(models.Model):
    """The admin's list of batches Bento accepted with some events failed (view permission)."""

    id = models.AutoField(primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "failure report"
        verbose_name_plural = "failure reports"
