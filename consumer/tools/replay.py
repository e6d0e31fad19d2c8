"""`consumer replay`: dead letters re-produced to their original topic once a fix is live.

An operator tool beside the runtime: it reads the dead-letter topic with its own group and
writes the original records back, so the running consumers take them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.stages.deadletter import H_REASON, H_REPLAYED_FROM, H_TOPIC


@dataclass(slots=True)
class ReplayStats:
    read: int = 0
    replayed: int = 0
    skipped: int = 0


def replay_dead_letters(
    kafka_config: dict[str, Any],
    dlq_topic: str,
    group_id: str,
    reasons: set[str] | None = None,
    target_topic: str | None = None,
    progress: Callable[[ReplayStats, int], None] | None = None,
    idle_timeout_s: float = 5.0,
) -> ReplayStats:
    """Re-produce dead letters to their original topic (or `target_topic`) once a fix is live.

    Reads `dlq_topic` with its own consumer group, up to the end offsets seen at start, and
    commits what it re-produced, so a second run continues where the first stopped.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    stats = ReplayStats()
    try:
        metadata = consumer.list_topics(dlq_topic, timeout=10)
        partitions = list(metadata.topics[dlq_topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), timeout=10)[1]
            for p in partitions
        }
        total = sum(ends.values())
        consumer.assign([TopicPartition(dlq_topic, p) for p in partitions])
        done = {p for p, end in ends.items() if end == 0}
        last_seen = time.monotonic()
        while len(done) < len(partitions) and time.monotonic() - last_seen < idle_timeout_s:
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                last_seen = time.monotonic()
                stats.read += 1
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= ends[partition]:
                    done.add(partition)
                pairs = _header_pairs(message.headers())
                headers = {k: _text(v) for k, v in pairs}
                reason = headers.get(H_REASON, "")
                if reasons and reason not in reasons:
                    stats.skipped += 1
                    continue
                topic = target_topic or headers.get(H_TOPIC, "")
                if not topic:
                    stats.skipped += 1
                    continue
                kept = [(k, v) for k, v in pairs if not k.startswith("capi.")]
                kept.append((H_REPLAYED_FROM, f"{dlq_topic}/{partition}/{offset}".encode()))
                producer.produce(topic, value=message.value(), key=message.key(), headers=kept)
                producer.poll(0)
                stats.replayed += 1
            if progress is not None:
                progress(stats, total)
        if producer.flush(30) != 0:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "replay produce not acked"))
        if stats.read:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return stats


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _header_pairs(headers: object) -> list[tuple[str, str | bytes | None]]:
    if isinstance(headers, dict):
        return list(headers.items())
    if isinstance(headers, list):
        return [(str(k), v) for k, v in headers]
    return []
