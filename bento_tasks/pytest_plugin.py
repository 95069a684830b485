"""pytest fixtures for projects that use bento-tasks (loaded through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeBento


@pytest.fixture
def bento_fake() -> Iterator[FakeBento]:
    """A fake Bento on a free local port; point BENTO_API_URL at ``bento_fake.url``."""
    with FakeBento() as fake:
        yield fake
