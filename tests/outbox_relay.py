"""A relay in a process of its own, for tests/test_outbox.py: ``python outbox_relay.py CALL WHEN START``.

Runs ``bento_tasks.outbox.relay()`` with the Django settings module named by DJANGO_SETTINGS_MODULE and
prints ``RELAYED <rows> <pushed>``. To be SIGKILLed at a known point, it stops (printing ``PAUSED``, then
sleeping) on its CALL-th Redis push, just before it ("before") or just after it ("after"); WHEN "none"
never stops, and "loop" relays again and again (as a busy beat would) until a line arrives on stdin.
START "go" prints ``READY`` once set up and waits for a "go" line, so several start together.
The relay itself is the real one: only the buffer call is wrapped.
"""

import sys
import threading
import time

import django

django.setup()

from bento_tasks import buffer, outbox  # noqa: E402

pause_at, when, start = int(sys.argv[1]), sys.argv[2], sys.argv[3]
calls = 0
push = buffer.Buffer.relay_rows


def pause() -> None:
    print("PAUSED", flush=True)
    time.sleep(600)


def relay_rows(self, alias, rows, forget=None):
    global calls
    calls += 1
    if calls == pause_at and when == "before":
        pause()
    pushed = push(self, alias, rows, forget)
    if calls == pause_at and when == "after":
        pause()
    return pushed


buffer.Buffer.relay_rows = relay_rows
if start == "go":
    print("READY", flush=True)
    sys.stdin.readline()
if when == "loop":
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    relayed = outbox.Relayed()
    while not stop.is_set():
        relayed += outbox.relay()
        time.sleep(0.005)
else:
    relayed = outbox.relay()
print("RELAYED", relayed.rows, relayed.pushed, flush=True)
