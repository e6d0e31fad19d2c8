"""Every stage that holds records keeps the one contract (`stages/contract.py`).

The assignments are checked by `mypy --strict` (part of `make test`): a stage that stops
matching the protocol fails the type check here, not in production."""

from __future__ import annotations

import random

from consumer.observability.telemetry import setup_telemetry
from consumer.records import Batch, Conversion, Secret
from consumer.stages.batcher import Batcher, BatchSettings
from consumer.stages.contract import Delivery, HoldingStage
from consumer.stages.deadletter import DeadLetter, DeadLetterWriter, LoggedDeadLetters
from consumer.stages.delivery import DeliveryClient, DeliverySettings
from consumer.stages.dryrun import DryRunDelivery
from tests.conftest import ConversionFactory


async def test_every_holding_stage_keeps_the_contract(
    conversion_factory: ConversionFactory,
) -> None:
    batches: list[Batch] = []
    batcher: HoldingStage[Conversion] = Batcher(batches.append, BatchSettings(linger_s=60))
    letters: HoldingStage[DeadLetter] = DeadLetterWriter(
        {}, "dlq", lambda letter: None, producer_factory=lambda config: LoggedDeadLetters()
    )
    delivery: Delivery = DeliveryClient(
        None,  # type: ignore[arg-type]  # nothing is sent in this test
        DeliverySettings(),
        lambda account: Secret("t"),
        lambda result: None,
        setup_telemetry(span_processors=[]),
        rng=random.Random(1),
    )
    dry_run: Delivery = DryRunDelivery(DeliverySettings(), lambda result: None, print)
    for stage in (batcher, letters, delivery, dry_run):
        assert stage.is_full is False
    # Draining the batcher hands its open batch on: afterwards it holds nothing.
    batcher.submit(conversion_factory())
    assert batches == [] and await batcher.drain(0.0) is True
    assert [len(b) for b in batches] == [1]
    for stage in (batcher, letters, delivery, dry_run):
        assert await stage.drain(0.0) is True  # nothing held
        await stage.close()
