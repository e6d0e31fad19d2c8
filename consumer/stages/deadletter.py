"""Dead-letter writes (original bytes plus reason headers) and the replay reader.

A record's offset may advance only after Kafka acknowledged its dead-letter write: `on_done` is
called then, on the event loop. Uses the plain `Producer` with its own poll thread because the
asyncio producer's batched path does not take headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.records import Envelope

logger = logging.getLogger(__name__)

H_REASON = "capi.reason"
H_ERROR = "capi.error"
H_REQUEST_ID = "capi.pinterest.request_id"
H_TOPIC = "capi.original.topic"
H_PARTITION = "capi.original.partition"
H_OFFSET = "capi.original.offset"
H_TIMESTAMP = "capi.original.timestamp_ms"
H_REPLAYED_FROM = "capi.replayed_from"
H_TRIMMED = "capi.trimmed"
# Which event of the record failed, when Pinterest refused one: a record with a rule's `also`
# events can have several dead letters, one per event refused.
H_EVENT_NAME = "capi.event_name"
H_EVENT_ID = "capi.event_id"
_RETRY_S = 1.0
# Kafka refuses these for this record whatever we retry: a trimmed copy goes instead.
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)


_CONSUMER_ONLY = (
    "group.",
    "auto.offset",
    "auto.commit",
    "enable.auto",
    "session.timeout",
    "heartbeat.",
    "max.poll",
    "partition.assignment",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
    "enable.partition.eof",
)


def producer_settings(kafka: dict[str, Any]) -> dict[str, Any]:
    """The consumer's librdkafka settings without those a producer would warn about."""
    return {k: v for k, v in kafka.items() if not k.startswith(_CONSUMER_ONLY)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    envelope: Envelope
    reason: str
    detail: str
    request_id: str = ""
    trimmed: str = ""  # why the original value and headers were left out, if they were
    event: tuple[str, str] | None = None  # (event_name, event_id) of the event refused

    @property
    def value(self) -> bytes:
        return b"" if self.trimmed else self.envelope.value

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        coords = self.envelope.coords
        ours: list[tuple[str, str | bytes | None]] = [
            (H_REASON, self.reason.encode()),
            (H_ERROR, self.detail[:1000].encode()),
            (H_TOPIC, coords.topic.encode()),
            (H_PARTITION, str(coords.partition).encode()),
            (H_OFFSET, str(coords.offset).encode()),
            (H_TIMESTAMP, str(self.envelope.timestamp_ms).encode()),
        ]
        if self.request_id:
            ours.append((H_REQUEST_ID, self.request_id.encode()))
        if self.event is not None:
            ours += [(H_EVENT_NAME, self.event[0].encode()), (H_EVENT_ID, self.event[1].encode())]
        if self.trimmed:
            return [*ours, (H_TRIMMED, self.trimmed.encode())]
        original = [(k, v) for k, v in self.envelope.headers if not k.startswith("capi.")]
        return original + ours

    def trim(self, error: str) -> DeadLetter:
        """A copy Kafka can take: coordinates, reason and why, without the original value,
        key and headers (the original stays in its topic at those coordinates)."""
        size = len(self.envelope.value) + sum(len(k) + len(v) for k, v in self.envelope.headers)
        return replace(self, trimmed=f"original of {size} bytes left out: {error}"[:300])


class PolledProducer:
    """The plain `Producer` with its own poll thread, where its delivery callbacks run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="dead-letter-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        self._producer.produce(
            topic, value=value, key=key, headers=headers, on_delivery=on_delivery
        )

    async def close(self) -> None:
        """Stop the poll thread and flush, off the event loop (both may take seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 5)
        await asyncio.to_thread(self._producer.flush, 5)


class LoggedDeadLetters:
    """A trial run's dead letters (`CAPI_DRY_RUN`, `CAPI_TEST_MODE`): one log line each with
    the reason and coordinates (never the value), acknowledged at once, and nothing written to
    the production dead-letter topic, which other tools replay from. `CAPI_TRIAL_DLQ_TOPIC`
    names a topic to write them to instead."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        wanted = ("capi.reason", "capi.original.topic", "capi.original.partition",
                  "capi.original.offset")  # fmt: skip
        found = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers if k in wanted}
        logger.warning("trial run: dead letter not written", extra={"dead_letter": found})
        on_delivery(None, None)  # type: ignore[arg-type]  # the writer never reads the message

    async def close(self) -> None:
        return None


class DeadLetterProducer(Protocol):
    """What the writer needs of a producer: `PolledProducer`, or a model in the simulation."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None: ...

    async def close(self) -> None: ...


class DeadLetterWriter:
    """`submit` never blocks; `is_full` while `max_pending` writes await Kafka's ack."""

    def __init__(
        self,
        producer_config: dict[str, Any],
        topic: str,
        on_done: Callable[[DeadLetter], None],
        max_pending: int = 10_000,
        producer_factory: Callable[[dict[str, Any]], DeadLetterProducer] = PolledProducer,
        is_wanted: Callable[[DeadLetter], bool] = lambda _: True,
    ) -> None:
        """`is_wanted` is asked before every write: False for a letter whose partition this
        process no longer holds (its next owner consumes the record again and decides)."""
        self.topic = topic
        self._on_done = on_done
        self._is_wanted = is_wanted
        self.abandoned = 0  # letters not written: their partition had gone
        self.max_pending = max_pending
        self.pending = 0
        self._config = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            **producer_config,
        }
        self._producer_factory = producer_factory
        self._producer: DeadLetterProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained = asyncio.Event()
        # Since when writes keep failing with nothing acknowledged (a missing topic, an ACL):
        # readiness reports it rather than stalling the partitions in silence.
        self.failing_since: float | None = None
        self.last_error = ""
        self.trimmed = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = self._producer_factory(self._config)

    @property
    def is_full(self) -> bool:
        return self.pending >= self.max_pending

    def submit(self, letter: DeadLetter) -> None:
        """Write one dead letter. Always taken: the pipeline stops accepting records while
        `is_full`, and letters from delivery results cannot be held back."""
        self.pending += 1
        self._drained.clear()
        self._produce(letter)

    def _produce(self, letter: DeadLetter) -> None:
        loop, producer = self._loop, self._producer
        assert loop is not None and producer is not None, "start() first"
        if not self._is_wanted(letter):
            # Written now, it would be written again by the partition's next owner, and its
            # acknowledgement would find no ledger to finish (issue 23's re-send check).
            self.abandoned += 1
            self._settled()
            return

        def acked(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(self._acked, letter, err)

        try:
            producer.produce(
                self.topic,
                value=letter.value,
                key=None if letter.trimmed else letter.envelope.key,
                headers=letter.headers(),
                on_delivery=acked,
            )
        except BufferError:
            loop.call_later(_RETRY_S, self._produce, letter)
        except KafkaException as exc:
            self._failed(letter, exc.args[0])

    def _acked(self, letter: DeadLetter, err: KafkaError | None) -> None:
        if err is not None:
            self._failed(letter, err)
            return
        self.failing_since = None
        self._settled()
        self._on_done(letter)

    def _settled(self) -> None:
        self.pending -= 1
        if not self.pending:
            self._drained.set()

    def _failed(self, letter: DeadLetter, err: KafkaError) -> None:
        """Never count a dead letter as written until Kafka says so: retry it, or, when Kafka
        will never take this record (too large for message.max.bytes), a trimmed copy."""
        assert self._loop is not None
        if err.code() in _TOO_LARGE and not letter.trimmed:
            self.trimmed += 1
            logger.warning(
                "dead letter too large for the topic: writing a trimmed copy",
                extra={"error": err.str(), "topic": self.topic, "reason": letter.reason},
            )
            self._produce(letter.trim(err.str()))
            return
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = err.str()
        logger.warning(
            "dead-letter write failed, retrying", extra={"error": err.str(), "topic": self.topic}
        )
        self._loop.call_later(_RETRY_S, self._produce, letter)

    async def drain(self, deadline_s: float) -> bool:
        """Wait for every pending write's ack until the monotonic `deadline_s`."""
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._drained.wait(), timeout=max(0.0, deadline_s - time.monotonic())
                )
        return self.pending == 0

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close()
