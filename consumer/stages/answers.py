"""What Pinterest's answer to one request means: the status table and the per-event answers (pure).

`classify` is the only place that looks at a status code. Each row of `STATUS_TABLE` is the
whole decision for its status: the action (take the per-event answers, split the request to
isolate bad events, halt the account, or retry), the dead-letter reason when the events fail
as a whole, whether the body's per-event answers are read, and the backoff policy of a retry.
Change the handling of a 422, or the backoff of a 503, in its row (and its test in
`tests/test_answers.py`); sending, retrying and reporting is `delivery.py`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Final

from consumer.records import EventOutcome


class Action(enum.Enum):
    OUTCOMES = "outcomes"  # every event has its final answer (processed or failed)
    BISECT = "bisect"  # the request as a whole was refused: split it to isolate the bad events
    HALT = "halt"  # nothing will work for this account until configuration changes
    RETRY = "retry"  # transient: the same request again after a backoff


@dataclass(frozen=True, slots=True)
class Backoff:
    """A retry's delay: exponential from the configured base up to the configured cap, each
    scaled here, with full jitter; never sooner than a `Retry-After` the answer carries."""

    base_scale: float = 1.0
    cap_scale: float = 1.0
    honours_retry_after: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    # Why every event of the request failed, when the answer says so without per-event answers.
    reason: str = "pinterest.event_failed"
    reads_outcomes: bool = False  # the body's per-event answers are parsed and used
    backoff: Backoff = Backoff()
    is_error: bool = True  # an HTTP error for the span and the request metric (error.type)
    detail: str = ""  # why an account halts, when the status does not say it by itself
    # The decision instead when the body carries no per-event answers that line up.
    without_outcomes: Decision | None = None


_RETRY: Final = Decision(Action.RETRY)
_HALT: Final = Decision(Action.HALT)
# A 200 that is not the events endpoint's answer (a proxy, a wrong CAPI_API_BASE_URL): taking
# it as delivered could lose every event.
_NOT_THE_API: Final = Decision(
    Action.HALT, is_error=False, detail="no per-event answers: is CAPI_API_BASE_URL the API?"
)
STATUS_TABLE: Final[dict[int, Decision]] = {
    200: Decision(
        Action.OUTCOMES, reads_outcomes=True, is_error=False, without_outcomes=_NOT_THE_API
    ),
    # "Not all events were processed": per-event answers in `details`.
    422: Decision(Action.OUTCOMES, reads_outcomes=True),
    # The request as a whole was refused (an event breaking the closed schema, one too large):
    # split until the bad events stand alone; an event alone is failed for this reason.
    400: Decision(Action.BISECT, "pinterest.invalid_event", reads_outcomes=True),
    413: Decision(Action.BISECT, "pinterest.event_too_large"),
    401: _HALT,  # the token
    403: _HALT,  # a token without access to this ad account
    404: _HALT,  # no such ad account for this token (listed from API 5.28)
    408: _RETRY,
    425: _RETRY,
    429: _RETRY,  # rate limited (code 8)
    503: _RETRY,  # ramped down (code 4197)
    0: _RETRY,  # no answer at all: a timeout or a connection error
}
NO_ANSWER: Final = STATUS_TABLE[0]


def row(status: int) -> Decision:
    """The table's row for `status`: other 5xx retry, every other status halts (3xx, the 2xx
    and 4xx the API never sends)."""
    found = STATUS_TABLE.get(status)
    if found is not None:
        return found
    return _RETRY if status >= 500 else dataclasses.replace(_HALT, is_error=status >= 400)


def classify(status: int, has_outcomes: bool, events: int) -> Decision:
    """The whole decision for an answer to a request of `events` events (0: no answer)."""
    decision = row(status)
    if not has_outcomes and decision.without_outcomes is not None:
        return decision.without_outcomes
    if decision.action is Action.BISECT and events == 1:  # nothing left to split
        return dataclasses.replace(decision, action=Action.OUTCOMES)
    return decision


def cause(status: int) -> str:
    """The label of a retry's cause in metrics: the status, or `connection` for no answer."""
    return str(status) if status else "connection"


UNKNOWN_STATUS: Final = "pinterest.unknown_status"
PROCESSED: Final = EventOutcome("processed")


def parse_outcomes(payload: Any, expected: int) -> list[EventOutcome] | None:
    """Per-event outcomes from a 200 body or a 422 body's `details`; None if they don't line up."""
    if isinstance(payload, dict) and isinstance(payload.get("details"), dict):
        payload = payload["details"]
    if not isinstance(payload, dict):
        return None
    events = payload.get("events")
    if isinstance(events, list) and len(events) == expected:
        outcomes = []
        for event in events:
            status = event.get("status") if isinstance(event, dict) else None
            if status == "processed":
                warning = event.get("warning_message")
                # One shared outcome for the common answer: a frozen dataclass per event cost
                # 1 µs, as much as the rest of reading the answer.
                outcomes.append(
                    EventOutcome("processed", message=warning) if warning else PROCESSED
                )
                continue
            message = (event.get("error_message") if isinstance(event, dict) else None) or ""
            if status == "failed":
                outcomes.append(EventOutcome("failed", "pinterest.event_failed", message))
            else:
                # From API 5.28 the status is a shared type that may grow. Anything but
                # "processed" is not a confirmed delivery: the event is dead-lettered (kept
                # for a replay, its offset free to move on) under its own reason, so a new
                # status shows in capi_events_failed_total{reason} at once.
                shown = str(status)[:40] if status is not None else "missing"
                outcomes.append(
                    EventOutcome(
                        "failed", UNKNOWN_STATUS, f"status {shown!r}: {message}".rstrip(": ")
                    )
                )
        return outcomes
    if payload.get("num_events_processed") == expected:
        return [PROCESSED] * expected
    return None


def error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("code") or "")
    return ""
