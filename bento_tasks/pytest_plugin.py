"""pytest fixtures for projects that use bento-tasks (loaded through the ``pytest11`` entry point).

They change the ``BENTO_*`` settings where bento_tasks reads them: Django settings when Django is
configured (pytest-django), else the environment; both are restored after the test.

- ``bento_fake``: a fake Bento (a real HTTP server) that the settings point at.
- ``bento_sync``: ``bento_fake``, and every event is POSTed to it before track() returns.
- ``bento_outbox``: the list of events sent during the test, kept in memory: no Redis, no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from . import conf, testmode
from .testing import FakeBento


@contextmanager
def override_bento_settings(**values: Any) -> Iterator[None]:
    """Set ``BENTO_*`` settings for the duration of the block, and resolve them afresh."""
    with ExitStack() as stack:
        stack.callback(conf.reset_settings)  # runs last, once the overrides are undone
        if conf._django_settings() is not None:
            from django.test import override_settings

            stack.enter_context(override_settings(**values))
        else:
            patch = stack.enter_context(pytest.MonkeyPatch.context())
            for name, value in values.items():
                patch.setenv(name, str(value))
        conf.reset_settings()
        yield


@pytest.fixture
def bento_fake() -> Iterator[FakeBento]:
    """A fake Bento on a free local port; BENTO_API_URL, the site uuid and the keys point at it."""
    with (
        FakeBento() as fake,
        override_bento_settings(
            BENTO_API_URL=fake.url,
            BENTO_SITE_UUID=fake.site_uuid,
            BENTO_PUBLISHABLE_KEY=fake.publishable_key,
            BENTO_SECRET_KEY=fake.secret_key,
        ),
    ):
        yield fake


@pytest.fixture
def bento_sync(bento_fake: FakeBento) -> Iterator[FakeBento]:
    """``bento_fake``, with BENTO_DELIVERY="sync": each event is in ``bento_fake.events`` once track() returns."""
    with override_bento_settings(BENTO_DELIVERY="sync"):
        yield bento_fake


@pytest.fixture
def bento_outbox() -> Iterator[list[dict[str, Any]]]:
    """Events sent during the test, as Bento would receive them (BENTO_DELIVERY="outbox"): no Redis, no HTTP."""
    testmode.outbox.clear()
    with override_bento_settings(BENTO_DELIVERY="outbox"):  # nothing is POSTed, so no key is needed
        yield testmode.outbox
    testmode.outbox.clear()
