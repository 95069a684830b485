"""Models of the Django app: the outbox table, and the admin's three entries.

``OutboxEvent`` holds events written in the caller's database transaction, waiting to be relayed to
Redis; only ``bento_tasks.outbox`` reads or writes it.

The three admin entries are unmanaged models: no table is ever created or read (their pages read
Redis), but Django gives each one permissions, so who may view, replay or purge is set with users
and groups like any other admin page: view for the pages, change to replay dead letters, delete to
purge them.

Imported by Django's app registry alone, so ``import bento_tasks`` keeps working where Django is not
installed.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


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


class OutboxEvent(models.Model):
    """One event, stored exactly as ``track()`` would queue it; the relay pushes these bytes as they are."""

    # 64 bits: ids are never reused within a table's life, which the relay's no-duplicate record relies on.
    id = models.BigAutoField(primary_key=True)
    # Compact UTF-8 JSON, validated and dated when the event was sent; bytes, so no database charset can alter it.
    event = models.BinaryField()
    # When the row was written: the status command's outbox_oldest_age.
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "bento_tasks_outbox"
        verbose_name = "outbox event"

    def __str__(self) -> str:
        return f"outbox event {self.pk}"
