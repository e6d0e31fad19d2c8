from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from consumer.observability.health import ReadinessFacts, assess
from consumer.records import Coordinates, Envelope
from consumer.stages.deadletter import (
    H_EVENT_ID,
    H_EVENT_NAME,
    H_OFFSET,
    H_REASON,
    H_TRIMMED,
    DeadLetter,
    DeadLetterWriter,
)

Headers = list[tuple[str, str | bytes | None]]


class KafkaTopic:
    """A producer whose topic refuses records over `max_bytes`, or every record while `error`."""

    def __init__(self, max_bytes: int = 1_000_000) -> None:
        self.max_bytes = max_bytes
        self.error: KafkaError | None = None
        self.written: list[tuple[bytes, Headers]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_delivery: Callable[[KafkaError | None, Any], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        if len(value) > self.max_bytes:
            loop.call_soon(on_delivery, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
        elif self.error is not None:
            loop.call_soon(on_delivery, self.error, None)
        else:
            self.written.append((value, headers))
            loop.call_soon(on_delivery, None, None)

    async def close(self) -> None:
        return None


def letter(size: int) -> DeadLetter:
    envelope = Envelope(Coordinates("orders", 3, 42), value=b"x" * size, headers=(("h", b"v"),))
    return DeadLetter(envelope, "pinterest.event_failed", "refused")


async def started(topic: KafkaTopic) -> tuple[DeadLetterWriter, list[DeadLetter]]:
    done: list[DeadLetter] = []
    writer = DeadLetterWriter({}, "dlq", done.append, producer_factory=lambda _: topic)
    writer.start()
    return writer, done


async def test_deadletter_too_large_for_the_topic_is_written_trimmed_and_final() -> None:
    """Issue 23, defect 4: retried every second for ever, its offset never became final."""
    topic = KafkaTopic(max_bytes=100)
    writer, done = await started(topic)
    writer.submit(letter(5000))
    assert await writer.drain(asyncio.get_running_loop().time() + 5)
    assert len(done) == 1 and done[0].envelope.coords.offset == 42
    value, headers = topic.written[0]
    found = dict(headers)
    assert value == b"" and found[H_REASON] == b"pinterest.event_failed"
    trimmed = found[H_TRIMMED]
    assert found[H_OFFSET] == b"42" and isinstance(trimmed, bytes)
    assert b"original of 5002 bytes left out" in trimmed
    assert "h" not in found and writer.trimmed == 1


async def test_deadletter_failing_writes_are_reported_until_one_succeeds() -> None:
    topic = KafkaTopic()
    topic.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    writer, done = await started(topic)
    writer.submit(letter(10))
    await asyncio.sleep(0.01)
    assert writer.failing_since is not None and done == []
    state, reason = assess(
        ReadinessFacts(dead_letter_failing_s=20.0, dead_letter_error=writer.last_error)
    )
    assert state == "dead_letter_failing" and "dead-letter writes failing" in reason
    topic.error = None
    assert await writer.drain(asyncio.get_running_loop().time() + 5)
    assert writer.failing_since is None and len(done) == 1


def test_deadletter_of_a_refused_event_names_the_event() -> None:
    envelope = Envelope(Coordinates("orders", 3, 42), value=b"x")
    refused = DeadLetter(envelope, "pinterest.event_failed", "no", event=("first_purchase", "o-1"))
    found = dict(refused.headers())
    assert found[H_EVENT_NAME] == b"first_purchase" and found[H_EVENT_ID] == b"o-1"
    assert H_EVENT_ID not in dict(letter(1).headers())  # a record that failed as a whole


async def test_deadletter_of_a_partition_gone_is_not_written() -> None:
    """Its next owner consumes the record again; written here too, it would be written twice."""
    topic = KafkaTopic()
    topic.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)  # the first try fails
    wanted = {"yes": True}
    done: list[DeadLetter] = []
    writer = DeadLetterWriter(
        {}, "dlq", done.append, producer_factory=lambda _: topic,
        is_wanted=lambda _: wanted["yes"],
    )  # fmt: skip
    writer.start()
    writer.submit(letter(10))
    await asyncio.sleep(0.01)
    wanted["yes"] = False  # the partition was lost before the retry
    topic.error = None
    assert await writer.drain(asyncio.get_running_loop().time() + 3)
    assert topic.written == [] and done == [] and writer.abandoned == 1
