"""The error hierarchy, and how to wait before retrying a `TransientError`.

Backpressure is not an exception here: a stage that owns a backlog says `is_full`, and the
pipeline's handler returns how many records it accepted; the source holds the rest (section 4 of
the style guide describes the same contract with a `Backpressure(accepted)` exception; a count
cannot escape into a TaskGroup and cancel it).
"""

from __future__ import annotations

import random


class ConsumerError(Exception):
    """Base of the consumer's own errors."""


class ConfigError(ConsumerError):
    """Nothing will work until configuration changes. `key` names the setting at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class CommandError(ConsumerError):
    """A command cannot do its job for a reason outside the program (nothing listening, a file
    or topic missing): the CLI prints the message as one line and exits 3."""


class TransientError(ConsumerError):
    """The same work may succeed later; retry it, never dead-letter it, never commit past it."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(ConsumerError):
    """This record will never succeed as it is: dead-letter it with `reason`, then move on.

    `reason` is a short stable code (``decode.unknown_schema_id``); `detail` never holds PII.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def backoff_s(
    attempt: int,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float:
    """Exponential backoff with full jitter before retry `attempt` (1, 2, ...); never sooner
    than a server's Retry-After. Delivery, the schema registry and Redis all wait with this."""
    # The exponent is capped: an outage of hours means thousands of attempts, and 2.0**1100
    # overflows a float (seen in a 10-minute sink outage run).
    delay = rng.uniform(0, min(cap_s, base_s * 2.0 ** min(attempt - 1, 60)))
    return max(delay, retry_after_s or 0.0)
