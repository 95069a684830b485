"""Test support for bento-tasks and for projects that use it.

- ``FakeBento`` (``fake_bento``): a real HTTP server that behaves like Bento's batch endpoint.
- ``rules``: Bento's documented request rules the fake enforces, and ``EXAMPLE_EVENTS``.
- ``RedisServer`` and ``CeleryWorker`` (``processes``): real processes to start, kill and restart.

Typical use::

    with FakeBento() as bento:
        # point the client at it: BENTO_API_URL=bento.url,
        # BENTO_SITE_UUID=bento.site_uuid, BENTO_PUBLISHABLE_KEY=bento.publishable_key,
        # BENTO_SECRET_KEY=bento.secret_key
        bento.fail(503, times=2)           # the first two batches meet an outage
        ...                                # run the code under test
        events = bento.wait_for_events(3)  # block until 3 events were accepted
"""

from .fake_bento import FakeBento, RecordedRequest
from .processes import CeleryWorker, RedisServer
from .rules import EXAMPLE_EVENTS

__all__ = ["EXAMPLE_EVENTS", "CeleryWorker", "FakeBento", "RecordedRequest", "RedisServer"]
