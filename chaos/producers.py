"""Producers sending events at a steady rate through ``track()`` and ``send_event.delay()``, and the ledger of
what they sent.

An event counts as sent (confirmed) when the call returned: from then on bento-tasks promises it. A call
that raised (``BufferUnavailable``, ``BrokerUnavailable``: Redis was down) may still have queued it (Redis
applied the write and died before answering), so such an event is *unconfirmed*: never retried under the same
name, not required at Bento, but any copies of it are checked like the others.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from bento_tasks import send_event, track

from .stack import POISON_TYPE


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, str] = {}  # email -> "track" / "delay"
        self.sent_at: dict[str, float] = {}  # email -> time.time() when its call began
        self.task_ids: dict[str, str] = {}  # email -> id of its send_event message (delay only)
        self.unconfirmed: set[str] = set()
        self.refusals: Counter[str] = Counter()  # exception names of calls that raised
        self.invalid: list[str] = []  # markers of invalid raw entries pushed
        self._numbers: Counter[str] = Counter()

    def name(self, prefix: str) -> str:
        with self.lock:
            self._numbers[prefix] += 1
            return f"{prefix}{self._numbers[prefix]}@chaos.test"

    def send(self, via: str, email: str, event_type: str, fields: dict[str, Any] | None = None) -> bool:
        """Send one event; returns whether the call returned (the event is then promised)."""
        task_id = None
        started = time.time()  # the message cannot be in the broker before this
        try:
            if via == "track":
                track(event_type, email, fields=fields)
            else:
                task_id = send_event.delay(event_type, email, fields=fields).id
        except Exception as exc:  # BufferUnavailable, BrokerUnavailable; anything else is counted and shown too
            with self.lock:
                self.unconfirmed.add(email)
                self.refusals[f"{via}: {type(exc).__name__}"] += 1
            return False
        with self.lock:
            self.sent[email] = via
            self.sent_at[email] = started
            if task_id is not None:
                self.task_ids[email] = task_id
        return True

    def send_poison(self, via: str) -> bool:
        return self.send(via, self.name("poison"), POISON_TYPE)


_TYPES = ("$signup", "chaos_view", "$update_fields")


class Producer(threading.Thread):
    """Sends ``rate`` events a second through ``via`` ("track" or "delay") until stopped."""

    def __init__(self, ledger: Ledger, via: str, rate: float) -> None:
        super().__init__(name=f"producer-{via}", daemon=True)
        self.ledger, self.via, self.interval = ledger, via, 1.0 / rate
        self.stopping = threading.Event()

    def run(self) -> None:
        prefix = "t" if self.via == "track" else "d"
        due = time.monotonic()
        n = 0
        while not self.stopping.is_set():
            n += 1
            self.ledger.send(self.via, self.ledger.name(prefix), _TYPES[n % 3], {"n": n, "plan": "pro"})
            due += self.interval
            # A call blocked by an outage is not made up for with a burst: the rate stays steady.
            due = max(due, time.monotonic() - self.interval)
            self.stopping.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
