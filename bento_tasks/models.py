"""The outbox table: events written in the caller's database transaction, waiting to be relayed to Redis.

Only ``bento_tasks.outbox`` reads or writes it. Imported by Django's app registry alone, so
``import bento_tasks`` keeps working where Django is not installed.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


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
