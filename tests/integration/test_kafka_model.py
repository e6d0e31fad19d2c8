"""Keeps the simulation's Kafka model honest: one short script played against the real broker
(through the real `AIOConsumer`) and against `tests/simulation/world.py`, and what the consumer
observes must be the same: assignments (an empty one included), revokes, pause state that
survives a revoke and a re-assignment, and asynchronous commit answers served by `consume()`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.aio import AIOConsumer

from devenv.kafka import KafkaBroker
from tests.simulation.world import Group, MemberClient

Make = Callable[[dict[str, Any], str], Any]


async def play(make: Make, produce: Callable[[int, int], None], settle_s: float) -> list[str]:
    """The script; `make(config, name)` builds a client, `produce(partition, n)` writes."""
    seen: list[str] = []

    def recorder(name: str) -> dict[str, Callable[..., Awaitable[None]]]:
        async def on_assign(_c: Any, parts: list[TopicPartition]) -> None:
            seen.append(f"{name} assign {sorted(tp.partition for tp in parts)}")

        async def on_revoke(_c: Any, parts: list[TopicPartition]) -> None:
            seen.append(f"{name} revoke {sorted(tp.partition for tp in parts)}")

        async def on_lost(_c: Any, parts: list[TopicPartition]) -> None:
            seen.append(f"{name} lost {sorted(tp.partition for tp in parts)}")

        return {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}

    answers: list[str] = []

    async def on_commit(error: Any, parts: list[TopicPartition]) -> None:
        answers.append(f"a commit answered {[(tp.partition, tp.offset) for tp in parts]}")

    async def consume(client: Any, until: Callable[[], bool], limit_s: float) -> int:
        count, deadline = 0, time.monotonic() + limit_s
        while time.monotonic() < deadline and not until():
            count += len([m for m in await client.consume(100, 0.1) if m.error() is None])
        return count

    first = make({"on_commit": on_commit}, "a")
    await first.subscribe(["t"], **recorder("a"))
    produce(0, 3)
    produce(1, 3)
    got: list[int] = [0]

    async def take(client: Any, want: int, limit_s: float) -> int:
        got[0] = 0

        async def loop() -> None:
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline and got[0] < want:
                got[0] += len([m for m in await client.consume(100, 0.1) if m.error() is None])

        await loop()
        return got[0]

    seen.append(f"a consumed {await take(first, 6, settle_s * 4)}")
    await first.pause([TopicPartition("t", 0), TopicPartition("t", 1)])
    produce(0, 2)
    produce(1, 2)
    seen.append(f"a consumed while paused {await take(first, 99, settle_s)}")
    await first.commit(offsets=[TopicPartition("t", 0, 3)], asynchronous=True)
    await consume(first, lambda: bool(answers), settle_s)
    seen.extend(answers)
    # A second member: one partition moves to it (revoke, then assign), then it leaves and the
    # partition comes back to the first, where librdkafka still remembers its pause.
    second = make({}, "b")
    await second.subscribe(["t"], **recorder("b"))

    def moved() -> bool:
        return any(s.startswith("b assign [") and s != "b assign []" for s in seen)

    deadline = time.monotonic() + settle_s * 6
    while time.monotonic() < deadline and not moved():
        await first.consume(100, 0.1)
        await second.consume(100, 0.1)
    await second.close()

    def back() -> bool:
        return sum(s.startswith("a assign") for s in seen) >= 2

    await consume(first, back, settle_s * 6)
    seen.append(f"a consumed after re-assignment {await take(first, 99, settle_s)}")
    await first.resume([TopicPartition("t", 0), TopicPartition("t", 1)])
    seen.append(f"a consumed after resume {await take(first, 4, settle_s * 2)}")
    await first.close()
    return seen


async def test_kafka_model_and_real_broker_show_the_consumer_the_same_things(
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        broker.create_topic("t", 2)
        group = f"model-{uuid.uuid4().hex[:6]}"
        producer = Producer({"bootstrap.servers": broker.bootstrap})

        def produce_real(partition: int, count: int) -> None:
            for _ in range(count):
                producer.produce("t", b"v", partition=partition)
            producer.flush(10)

        def make_real(extra: dict[str, Any], name: str) -> AIOConsumer:
            return AIOConsumer(
                {
                    "bootstrap.servers": broker.bootstrap,
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 500,
                    **extra,
                },
                max_workers=4,
            )

        real = await play(make_real, produce_real, settle_s=3.0)
    finally:
        broker.cleanup()

    model_group = Group(random.Random(1), [("t", 0), ("t", 1)])

    def produce_model(partition: int, count: int) -> None:
        for _ in range(count):
            model_group.logs[("t", partition)].append(b"v")

    def make_model(extra: dict[str, Any], name: str) -> MemberClient:
        return MemberClient(model_group, extra, name)

    modelled = await play(make_model, produce_model, settle_s=0.5)

    def by_member(seen: list[str]) -> dict[str, list[str]]:
        # What each member observes, in its order (members interleave as timing has it).
        return {m: [s for s in seen if s.startswith(f"{m} ")] for m in ("a", "b")}

    assert by_member(modelled) == by_member(real), f"model:\n{modelled}\nreal:\n{real}"
    assert "a consumed after re-assignment 0" in real  # the pause outlived the revoke
