"""The error hierarchy, and `Backpressure`, which is flow control rather than an error."""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of the consumer's own errors."""


class ConfigError(ConsumerError):
    """Nothing will work until configuration changes. `key` names the setting at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class AccountUnauthorized(ConfigError):
    """Pinterest answered 401/403 for an ad account: halt it, never dead-letter its events."""

    def __init__(self, ad_account: str, status: int, message: str) -> None:
        super().__init__(f"token for ad account {ad_account}", f"HTTP {status}: {message}")
        self.ad_account = ad_account
        self.status = status


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


class Backpressure(Exception):
    """A stage's backlog is over its high watermark: hold the rest and retry later.

    `accepted` counts how many of the offered records were taken before the stage refused.
    """

    def __init__(self, accepted: int = 0) -> None:
        super().__init__(f"backpressure after {accepted} accepted")
        self.accepted = accepted
