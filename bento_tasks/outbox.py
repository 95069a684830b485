"""The transactional outbox (``BENTO_OUTBOX``): the only module that speaks the ORM.

``write()`` INSERTs an encoded event into ``bento_tasks_outbox`` inside the caller's transaction, so
the event commits or rolls back with the caller's rows and Redis is not touched on the request path.
Rows then reach the Redis buffer two ways, both through ``relay_chunk``:

- the fast path: once the transaction commits, a background thread of the committing process relays
  the rows it wrote (a failure is logged once, never raised into the caller);
- the safety net: the beat task ``bento_tasks.relay_outbox`` runs ``relay()``, which relays whatever
  is left, oldest first, in chunks.

A chunk is taken, pushed and deleted in one database transaction. The rows are locked with
``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, MariaDB 10.6+), so concurrent relays never
take the same rows; SQLite has no row locks, so there the chunk is taken with ``DELETE ... RETURNING``,
whose write lock serializes relays. A relay that dies after the Redis push and before its delete
commits leaves its rows behind; the Redis side remembers which rows it pushed (see
``Buffer.relay_rows``), so the next relay only deletes them: no event is pushed twice.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

# Re-exported: callers report a relay's database failure without importing django.db themselves.
from django.db import DatabaseError as DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from .buffer import Pushed, get_buffer
from .exceptions import OutboxMisuse
from .models import OutboxEvent

logger = logging.getLogger(__name__)

#: Rows per relay transaction, and per Redis call: a full Bento batch, and few enough to keep locks short.
CHUNK = 1000

TABLE = OutboxEvent._meta.db_table

#: Seconds the after-commit relay lets commits gather before one round (a transaction and two Redis calls)
#: relays them all: a busy process pays one round for many rows. Far below BENTO_FLUSH_INTERVAL.
GATHER = 0.05
#: Seconds the after-commit relay keeps its database connections after the last commit.
LINGER = 1.0
#: Seconds an exiting process waits for its after-commit relay to finish.
EXIT_WAIT = 5.0


@dataclass(frozen=True)
class Relayed:
    """What a relay did: rows taken from the table (and deleted), and events pushed to Redis."""

    rows: int = 0
    #: Fewer than ``rows`` when an earlier relay had pushed some of them and died before deleting them.
    pushed: int = 0

    def __add__(self, other: Relayed) -> Relayed:
        return Relayed(self.rows + other.rows, self.pushed + other.pushed)


def write(raw: bytes, using: str | None = None) -> None:
    """INSERT one encoded event on database ``using`` (default: "default"), in its current transaction.

    Outside a transaction the row is committed at once, in a transaction of its own. Either way, once it
    is committed this process's background relay pushes it to Redis.
    """
    alias = using or DEFAULT_DB_ALIAS
    connection = connections[alias]
    # One plain INSERT rather than Model.objects.create(): this runs in every checkout, and the model
    # machinery costs about as much as the round trip (bench/outbox.py).
    created = connection.ops.adapt_datetimefield_value(timezone.now())
    sql = f"INSERT INTO {connection.ops.quote_name(TABLE)} (event, created) VALUES (%s, %s)"
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(sql + " RETURNING id", [raw, created])
            row_id = cursor.fetchone()[0]
        else:  # MySQL
            cursor.execute(sql, [raw, created])
            row_id = cursor.lastrowid
    transaction.on_commit(partial(_fast_path.add, alias, row_id), using=alias)


def relay(using: str | None = None, max_seconds: float | None = None) -> Relayed:
    """Relay waiting rows to the Redis buffer, oldest first, until none is left (or ``max_seconds`` passed).

    ``using``: one database alias; by default every alias whose outbox table exists. The beat task
    ``bento_tasks.relay_outbox`` calls this; so can an operator's command. BufferUnavailable if Redis is
    down: the rows stay, nothing is lost or duplicated. A database that cannot be reached is logged and
    skipped, so the others are still relayed; its error is raised at the end.
    """
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    total, failed = Relayed(), None
    for alias in [using] if using else _candidate_aliases():
        try:
            if using or has_table(alias):
                total += _relay_all(alias, None, deadline)
        except DatabaseError as exc:
            logger.error("bento_tasks: outbox relay on database %r failed: %s", alias, exc)
            failed = failed or exc
    if failed is not None:
        raise failed
    return total


def _relay_all(alias: str, ids: list[int] | None, deadline: float | None = None) -> Relayed:
    """Every waiting row (or those in ``ids``), chunk after chunk; each chunk's records are dropped by the next
    chunk's Redis call, the last chunk's on its own."""
    total, done = Relayed(), None
    chunks = repeat(None) if ids is None else (ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK))
    try:
        for chunk_ids in chunks:
            chunk, done = relay_chunk(alias, chunk_ids, done)
            total += chunk
            if ids is None and (chunk.rows < CHUNK or (deadline is not None and time.monotonic() > deadline)):
                break
        return total
    finally:
        if done is not None:
            get_buffer().forget_relayed(done)


def relay_chunk(
    alias: str, ids: Sequence[int] | None = None, forget: Pushed | None = None
) -> tuple[Relayed, Pushed | None]:
    """Take up to CHUNK rows (only those in ``ids``, if given) that no other relay holds, push, delete, commit.

    ``forget``: the previous chunk's records (its delete has committed), dropped in the same Redis call.
    Returns what was done, and this chunk's records, to drop the same way once nothing else will.
    """
    connection = connections[alias]
    if connection.in_atomic_block:
        # Inside an outer transaction the delete would commit, or roll back, with it, long after the
        # Redis record of these rows is dropped: a rollback would bring rows back to be pushed again.
        raise OutboxMisuse(
            "the outbox relay must not run inside a transaction (transaction.atomic): call it outside any atomic "
            "block, as the beat task bento_tasks.relay_outbox and `manage.py bento relay` do"
        )
    buffer = get_buffer()
    # Plain SQL through Django's connection: the ORM's query building costs more than the round trips.
    table = connection.ops.quote_name(TABLE)
    where, params = ("WHERE " + _id_in(connection, ids), _id_params(connection, ids)) if ids is not None else ("", [])
    sqlite = connection.vendor == "sqlite"
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if sqlite:
            # The DELETE takes the database's write lock before it reads, so a second relay waits for this
            # one to commit and then finds these rows gone; a SELECT first would let both read them.
            # (RETURNING: SQLite 3.35+.)
            subquery = f"SELECT id FROM {table} {where} ORDER BY id LIMIT %s"
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({subquery}) RETURNING id, event", [*params, CHUNK])
        else:
            skip = " SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
            cursor.execute(
                f"SELECT id, event FROM {table} {where} ORDER BY id LIMIT %s FOR UPDATE{skip}", [*params, CHUNK]
            )
        # Drivers return bytes (memoryview: psycopg2); RETURNING has no order, the SELECT is ordered.
        rows = [(row_id, event if type(event) is bytes else bytes(event)) for row_id, event in cursor.fetchall()]
        if not rows:
            if forget is not None:
                buffer.forget_relayed(forget)
            return Relayed(), None
        if sqlite:
            rows.sort()
        pushed = buffer.relay_rows(alias, rows, forget)  # raises: the transaction rolls back, the rows stay
        if not sqlite:
            taken = [row_id for row_id, _ in rows]
            delete = f"DELETE FROM {table} WHERE {_id_in(connection, taken)}"
            if connection.vendor == "mysql":
                # Without it, InnoDB deletes a list covering much of a small table by a full scan, which
                # locks (and waits for) the rows other relays hold: two relays then deadlock (error 1213).
                # ORDER BY the key with a LIMIT makes it look up only these rows.
                delete += f" ORDER BY id LIMIT {len(taken)}"
            cursor.execute(delete, _id_params(connection, taken))
    return Relayed(len(rows), pushed.count), pushed


def _id_in(connection: BaseDatabaseWrapper, ids: Sequence[int]) -> str:
    # PostgreSQL takes the ids as one array: Django binds parameters in Python, and a thousand
    # placeholders cost more to bind than the statement takes to run.
    return "id = ANY(%s)" if connection.vendor == "postgresql" else f"id IN ({', '.join(['%s'] * len(ids))})"


def _id_params(connection: BaseDatabaseWrapper, ids: Sequence[int]) -> list[Any]:
    return [list(ids)] if connection.vendor == "postgresql" else list(ids)


def outbox_aliases() -> list[str]:
    """Database aliases that can hold outbox rows: migrations allowed there and the table created."""
    return [alias for alias in _candidate_aliases() if has_table(alias)]


def _candidate_aliases() -> list[str]:
    return [
        alias
        for alias in connections
        if not connections.settings[alias].get("TEST", {}).get("MIRROR")  # a test mirror is another alias's db
        and router.allow_migrate_model(alias, OutboxEvent)
    ]


def has_table(alias: str) -> bool:
    """Whether the outbox table exists on ``alias`` (its migration has run)."""
    with connections[alias].cursor() as cursor:
        return TABLE in connections[alias].introspection.table_names(cursor)


def missing_tables(aliases: Iterable[str] | None = None) -> list[str]:
    """The aliases among ``aliases`` (default: the default database) whose outbox table does not exist.

    A database that cannot be reached is left out: migrate and runserver report that themselves.
    """
    missing = []
    for alias in aliases or [DEFAULT_DB_ALIAS]:
        try:
            if not has_table(alias):
                missing.append(alias)
        except DatabaseError:
            continue
    return missing


def is_database(alias: str) -> bool:
    """Whether ``alias`` is one of the project's DATABASES."""
    return alias in connections


def on_commit(callback: Callable[[], object], using: str | None = None) -> None:
    """Run ``callback`` once the current transaction on database ``using`` commits (outside one: at once);
    never if it rolls back."""
    transaction.on_commit(callback, using=using)


def backlog() -> tuple[int, float | None]:
    """Rows waiting in every outbox table, and the age in seconds of the oldest (None when there is none)."""
    count, oldest = 0, None
    for alias in outbox_aliases():
        rows = OutboxEvent.objects.using(alias)
        count += rows.count()
        # The lowest id, not MIN(created): the primary key finds it without reading the table.
        first = rows.order_by("pk").values_list("created", flat=True).first()
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return count, None if oldest is None else round(max(0.0, (timezone.now() - oldest).total_seconds()), 3)


class _FastPath:
    """Relays the rows this process committed, from a background thread: never on the caller's thread.

    Row ids arrive from on-commit callbacks. The thread lets the commits of a burst gather for GATHER
    seconds, then relays them together; it keeps its database connections while commits keep coming and
    closes them after LINGER seconds without any. What it cannot relay stays in the table for ``relay()``.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child (a prefork pool, a pre-forking web server) has the pending ids but not the thread.
        os.register_at_fork(after_in_child=self._reset)
        # A command that exits right after its commit still relays its rows (bounded: Redis may hang).
        atexit.register(self.wait_idle, EXIT_WAIT)

    def _reset(self) -> None:
        self._wake = threading.Condition()
        self._pending: dict[str, list[int]] = {}
        self._thread: threading.Thread | None = None
        self._busy = False  # relaying, or holding connections
        self._hurry = False  # someone waits in wait_idle: close at once instead of lingering
        self._failing = False

    def add(self, alias: str, row_id: int) -> None:
        with self._wake:
            self._pending.setdefault(alias, []).append(row_id)
            if self._thread is None:
                self._busy = True
                self._thread = threading.Thread(target=self._run, name="bento-outbox-relay", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every row handed over so far was tried (relayed, or left) and no connection is held."""
        with self._wake:
            self._hurry = True
            self._wake.notify_all()
            return self._wake.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            time.sleep(GATHER)
            with self._wake:
                pending, self._pending = self._pending, {}
            for alias, ids in pending.items():
                self._relay(alias, ids)
            with self._wake:
                if self._wake.wait_for(lambda: self._pending or self._hurry, LINGER) and self._pending:
                    continue
            connections.close_all()  # this thread's own connections
            with self._wake:
                if not self._pending:
                    self._busy = self._hurry = False
                    self._wake.notify_all()
                    self._wake.wait_for(lambda: self._pending)
                self._busy = True

    def _relay(self, alias: str, ids: list[int]) -> None:
        try:
            _relay_all(alias, ids)
        except Exception as exc:  # a failure must not kill the thread: the rows wait for relay()
            if not self._failing:
                logger.warning(
                    "bento_tasks: outbox relay after commit failed (%s); the events wait in the %s table on "
                    "database %r until the beat's bento_tasks.relay_outbox relays them",
                    exc,
                    TABLE,
                    alias,
                )
            self._failing = True
            if isinstance(exc, DatabaseError):
                connections[alias].close()  # reconnect next time
        else:
            self._failing = False


_fast_path = _FastPath()
