"""Every error bento_tasks raises.

``BentoError`` is the single base; each subclass also inherits the builtin that
fits, so ``except ValueError`` keeps working for callers who know nothing of us.
``ConfigurationError`` deliberately stands outside the base: a broad
``except BentoError`` around a send must never hide a missing secret key.
"""

from __future__ import annotations

from typing import Any


class BentoError(Exception):
    """Base class of every runtime error of this package."""


class InvalidEvent(BentoError, ValueError):
    """An event that Bento would refuse; ``errors`` maps each field path to its messages."""

    #: How the message begins; an invalid event's dead letter has the message as its reason.
    REASON = "invalid Bento event"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
        super().__init__(f"{self.REASON}: {detail}")

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[dict[str, list[str]]]]:
        # Celery pickles a task's exception (prefork pool, result backends, Reject): rebuild from the errors.
        return (type(self), (self.errors,))


class BufferUnavailable(BentoError, ConnectionError):
    """Redis could not be reached, so the event was not stored (and not silently dropped)."""


class BrokerUnavailable(BentoError, ConnectionError):
    """``send_event.delay()`` could not hand the event to the Celery broker, so it was not sent."""


class InvalidFilter(BentoError, ValueError):
    """A dead-letter filter that cannot be applied as given (e.g. a status that is not a number)."""


class OutboxMisuse(BentoError, RuntimeError):
    """The outbox relay was called where it cannot keep its promise of relaying each row once."""


class ConfigurationError(Exception):
    """Settings are missing or wrong; the message names each one and what to set.

    ``problems`` holds one line per problem, when several were found at once.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested error dict into ``{"fields.plan": ["..."]}``."""
    if isinstance(errors, list):
        return {prefix or "_schema": [str(m) for m in errors]}
    flat: dict[str, list[str]] = {}
    for key, value in errors.items():
        # marshmallow's Dict field nests key/value errors under "key"/"value"
        path = prefix if key in ("value", "key") and prefix else f"{prefix}.{key}" if prefix else str(key)
        flat.update(flatten_errors(value, path))
    return flat
