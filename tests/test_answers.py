from __future__ import annotations

import random

import pytest

from consumer.observability.telemetry import setup_telemetry
from consumer.records import AdAccountId, Batch, EventOutcome, Secret
from consumer.stages.answers import (
    STATUS_TABLE,
    Action,
    Backoff,
    Decision,
    cause,
    classify,
    parse_outcomes,
    row,
)
from consumer.stages.delivery import DeliveryClient, DeliverySettings
from tests.conftest import ConversionFactory, eventually
from tests.test_delivery import _ScriptedSession


def test_parse_outcomes_200_and_422_shapes() -> None:
    ok = {
        "num_events_received": 2,
        "num_events_processed": 1,
        "events": [
            {"status": "processed", "error_message": None, "warning_message": "w"},
            {"status": "failed", "error_message": "bad em", "warning_message": None},
        ],
    }
    assert parse_outcomes(ok, 2) == [
        EventOutcome("processed", message="w"),
        EventOutcome("failed", "pinterest.event_failed", "bad em"),
    ]
    unprocessable = {
        "code": 953,
        "message": "x",
        "details": {
            **ok,
            "events": [
                {"status": "failed", "error_message": "", "warning_message": ""},
                {"status": "processed", "error_message": "", "warning_message": ""},
            ],
        },
    }
    outcomes = parse_outcomes(unprocessable, 2)
    assert outcomes is not None
    assert [o.status for o in outcomes] == ["failed", "processed"]
    assert outcomes[1].message == ""


def test_parse_outcomes_mismatch_returns_none() -> None:
    assert parse_outcomes({"events": [{"status": "processed"}]}, 2) is None
    assert parse_outcomes({"num_events_processed": 2}, 2) == [EventOutcome("processed")] * 2
    assert parse_outcomes(None, 1) is None


@pytest.mark.parametrize(("status", "has_outcomes", "events", "action"), [
    (200, True, 5, "outcomes"), (422, True, 5, "outcomes"), (422, False, 5, "outcomes"),
    (200, False, 5, "halt"),  # a 200 that is not the events endpoint's answer
    (400, False, 5, "bisect"), (400, False, 1, "outcomes"),
    (413, False, 5, "bisect"), (413, False, 1, "outcomes"),  # one event too big: it fails
    (401, False, 5, "halt"), (403, False, 5, "halt"), (404, False, 5, "halt"),
    (405, False, 5, "halt"), (409, False, 5, "halt"), (301, False, 5, "halt"),
    (204, False, 5, "halt"),
    (408, False, 5, "retry"), (425, False, 5, "retry"), (429, False, 5, "retry"),
    (500, False, 5, "retry"), (503, False, 5, "retry"), (599, False, 5, "retry"),
    (0, False, 5, "retry"),  # no answer: timeout or connection error
])  # fmt: skip
def test_classify_every_status_has_one_meaning(
    status: int, has_outcomes: bool, events: int, action: str
) -> None:
    assert classify(status, has_outcomes, events).action.value == action


def test_each_row_is_the_whole_decision() -> None:
    """Reasons, per-event reading and errors come from the row, nowhere else."""
    assert classify(413, False, 1) == Decision(Action.OUTCOMES, "pinterest.event_too_large")
    assert classify(400, False, 1).reason == "pinterest.invalid_event"
    assert classify(422, False, 3).reason == "pinterest.event_failed"  # no details: all failed
    assert classify(200, False, 3).detail.startswith("no per-event answers")
    assert not classify(200, True, 3).is_error and classify(503, False, 3).is_error
    assert not row(302).is_error and row(418).is_error  # a redirect halts but is no HTTP error
    assert [s for s, d in STATUS_TABLE.items() if d.reads_outcomes] == [200, 422, 400]
    assert cause(0) == "connection" and cause(429) == "429"


async def test_a_rows_backoff_is_what_delivery_waits(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    conversion_factory: ConversionFactory,
) -> None:
    """The seam for a per-status retry policy: a row's backoff scales the configured one."""
    slow = Backoff(base_scale=100.0, cap_scale=100.0, honours_retry_after=False)
    monkeypatch.setitem(STATUS_TABLE, 503, Decision(Action.RETRY, backoff=slow))
    session = _ScriptedSession(on_first=lambda: None)  # 503 first
    client = DeliveryClient(
        session,  # type: ignore[arg-type]
        DeliverySettings(backoff_base_s=1.0, backoff_cap_s=1.0),
        lambda a: Secret("token"),
        lambda result: None,
        setup_telemetry(span_processors=[]),
        rng=random.Random(3),
    )
    conversion = conversion_factory()
    client.submit(Batch(AdAccountId("111"), (conversion,), (b'{"event_id":"e"}',)))
    await eventually(
        lambda: any(getattr(r, "action", "").startswith("retrying") for r in caplog.records),
        what="the retry's log line",
    )
    await client.close()
    (line,) = [r for r in caplog.records if getattr(r, "action", "").startswith("retrying")]
    delay_s = float(line.action.split()[-1].rstrip("s"))  # type: ignore[attr-defined]
    assert delay_s > 1.0  # past the configured cap of 1 s: the row's scale of 100 applies


def test_a_status_other_than_processed_or_failed_is_its_own_failure() -> None:
    """Issue 25 part 2: from 5.28 the status is a shared type that may grow; an unknown one
    is not a delivery: dead-lettered under its own reason, never a crash."""
    body = {
        "num_events_received": 3,
        "num_events_processed": 1,
        "events": [
            {"status": "processed", "error_message": "", "warning_message": ""},
            {"status": "deduplicated", "error_message": "seen", "warning_message": ""},
            {"status": None},
        ],
    }
    outcomes = parse_outcomes(body, 3)
    assert outcomes is not None
    assert [(o.status, o.reason) for o in outcomes] == [
        ("processed", ""),
        ("failed", "pinterest.unknown_status"),
        ("failed", "pinterest.unknown_status"),
    ]
    assert outcomes[1].message == "status 'deduplicated': seen"
    assert outcomes[2].message == "status 'missing'"
