"""Helpers for end-to-end tests: topics, sample traffic, the sandbox and consumer processes."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.conversion.rules import load_mapping
from consumer.engine.process import RecordProcessor
from consumer.tools.transform import transform_record
from devenv.kafka import KafkaBroker, admin_client, group_reader, shared_producer
from devenv.procs import ROOT, Server, free_port, get_json, port_open, wait_until
from devenv.samples import (
    ENGAGEMENT_TOPIC,
    ORDERS_TOPIC,
    SCHEMAS,
    engagement_record,
    load_schema,
    register,
    sample_stream,
    wire_encode,
)

TOKEN = "it-token"
FINAL = ("delivered", "deduplicated", "skipped", "dead_lettered")


@dataclass
class Topics:
    orders: str
    engagement: str
    dead_letter: str
    mapping: Path

    @property
    def all(self) -> list[str]:
        return [self.orders, self.engagement]


def make_topics(kafka: KafkaBroker, prefix: str, workdir: Path, partitions: int = 4) -> Topics:
    topics = Topics(
        f"{prefix}.orders", f"{prefix}.engagement", f"{prefix}.dlq", workdir / "mapping.yaml"
    )
    for name in topics.all:
        kafka.create_topic(name, partitions)
    kafka.create_topic(topics.dead_letter, 1)
    text = (ROOT / "schemas" / "mapping.example.yaml").read_text()
    text = text.replace(f"topic: {ORDERS_TOPIC}", f"topic: {topics.orders}")
    text = text.replace(f"topic: {ENGAGEMENT_TOPIC}", f"topic: {topics.engagement}")
    topics.mapping.write_text(text)
    return topics


@dataclass
class Produced:
    topic: str
    partition: int
    offset: int
    account_event: tuple[str, str] | None  # what Pinterest should receive, if anything
    outcome: str  # "event", "dropped", "error"


@dataclass
class Traffic:
    produced: list[Produced] = field(default_factory=list)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def expected_ids(self) -> set[tuple[str, str]]:
        return set(self.events)


def produce_traffic(
    kafka: KafkaBroker,
    registry_url: str,
    topics: Topics,
    count: int,
    seed: int = 7,
    poison: list[bytes] | None = None,
    duplicate_ratio: float = 0.05,
) -> Traffic:
    """Produce sample records in Confluent wire format and work out what each should become."""
    schemas: dict[str, tuple[int, Any]] = {}
    rename = {ORDERS_TOPIC: topics.orders, ENGAGEMENT_TOPIC: topics.engagement}
    for topic, stem in ((topics.orders, "order_event"), (topics.engagement, "engagement_event")):
        for version in (1, 2):
            name = f"{stem}.v{version}.avsc"
            schemas[f"{topic}/{name}"] = (
                register(registry_url, f"{topic}-value", name),
                load_schema(name),
            )
    readers = {n: load_schema(f"{n}.v2.avsc") for n in ("order_event", "engagement_event")}
    mapping = load_mapping(topics.mapping, "mapping")
    processor = RecordProcessor(mapping, check_every=1)
    now_s = int(time.time())
    traffic = Traffic()
    producer = shared_producer(kafka.bootstrap)
    pending: list[tuple[str, bytes, dict[str, Any] | None, str]] = []
    for sample_topic, schema_name, record in sample_stream(count, seed, duplicate_ratio):
        topic = rename[sample_topic]
        schema_id, schema = schemas[f"{topic}/{schema_name}"]
        value = wire_encode(schema_id, schema, record)
        reader = readers[schema_name.split(".")[0]]
        decoded: Any = fastavro.schemaless_reader(BytesIO(value[5:]), schema, reader)
        pending.append((topic, value, decoded, str(reader["name"])))
    for raw in poison or []:
        pending.append((topics.orders, raw, None, ""))
    for topic, value, decoded, record_name in pending:

        def on_delivery(
            err: Any, msg: Any, decoded: Any = decoded, name: str = record_name
        ) -> None:
            assert err is None, err
            if decoded is None:
                traffic.produced.append(
                    Produced(msg.topic(), msg.partition(), msg.offset(), None, "error")
                )
                return
            result = transform_record(
                {"topic": msg.topic(), "value": decoded, "record": name}, processor, now_s
            )
            account_event = None
            if "event" in result:
                account_event = (result["ad_account_id"], result["event"]["event_id"])
                traffic.events.setdefault(account_event, result["event"])
                for extra in result.get("also", ()):  # a rule's `also` events
                    if "event_id" in extra:
                        traffic.events.setdefault(
                            (result["ad_account_id"], extra["event_id"]), extra
                        )
            outcome = (
                "event" if "event" in result else "dropped" if "dropped" in result else "error"
            )
            traffic.produced.append(
                Produced(msg.topic(), msg.partition(), msg.offset(), account_event, outcome)
            )

        producer.produce(topic, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    return traffic


def produce_traced_engagements(
    kafka: KafkaBroker,
    registry_url: str,
    topics: Topics,
    exporter: SpanExporter,
    count: int,
    email: str,
    seed: int = 2,
) -> list[str]:
    """Engagement events carrying `email`, each sent under a producer span (exported through
    `exporter`) whose W3C traceparent rides in the message headers; their trace ids in hex."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop-producer"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-producer")
    schema_id = register(registry_url, f"{topics.engagement}-value", "engagement_event.v1.avsc")
    schema = load_schema("engagement_event.v1.avsc")
    producer = shared_producer(kafka.bootstrap)
    rng = random.Random(seed)
    trace_ids = []
    for n in range(count):
        record = engagement_record(rng, n, int(time.time() * 1000))
        record["email"] = email
        with tracer.start_as_current_span(
            f"send {topics.engagement}", kind=SpanKind.PRODUCER
        ) as span:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))
            producer.produce(
                topics.engagement,
                value=wire_encode(schema_id, schema, record),
                headers=[("traceparent", carrier["traceparent"].encode())],
            )
    assert producer.flush(10) == 0
    provider.shutdown()
    return trace_ids


class SandboxProcess:
    def __init__(self, workdir: Path, keep_events: int = 500_000, token: str = TOKEN) -> None:
        self.port = free_port()
        self.server = Server(
            "sandbox",
            [
                sys.executable,
                "-m",
                "consumer",
                "sandbox",
                "--port",
                str(self.port),
                "--token",
                f"{token}=*",
                "--keep-events",
                str(keep_events),
            ],
            workdir / f"sandbox-{self.port}.log",
            cwd=ROOT,
        )
        wait_until(lambda: port_open(self.port), 30, "sandbox", self.server.proc, self.server.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def faults(self, **faults: Any) -> None:
        get_json(f"{self.url}/_sandbox/faults", faults)

    def reset(self) -> None:
        get_json(f"{self.url}/_sandbox/reset", {})

    def stats(self) -> dict[str, Any]:
        return dict(get_json(f"{self.url}/_sandbox/stats"))

    def accepted_ids(self) -> set[tuple[str, str]]:
        by_account = get_json(f"{self.url}/_sandbox/event_ids")
        return {(account, event_id) for account, ids in by_account.items() for event_id in ids}

    def resends(self) -> list[tuple[str, str, float, float]]:
        """(account, event id, first answered at, accepted again at) for re-sent events."""
        answer = get_json(f"{self.url}/_sandbox/resends", timeout_s=60)
        return [(str(a), str(e), float(first), float(again)) for a, e, first, again in answer]

    def events(self, limit: int = 1_000_000) -> list[dict[str, Any]]:
        return list(get_json(f"{self.url}/_sandbox/events?limit={limit}"))

    def stop(self) -> None:
        self.server.stop()


class ConsumerProcess:
    def __init__(
        self,
        workdir: Path,
        kafka: KafkaBroker,
        topics: Topics,
        registry_url: str,
        sandbox_url: str,
        group: str,
        **settings: str,
    ) -> None:
        self.health_port = free_port()
        self.env = {
            "CAPI_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "CAPI_KAFKA_GROUP_ID": group,
            "CAPI_MAPPING_FILE": str(topics.mapping),
            "CAPI_SCHEMA_REGISTRY_URL": registry_url,
            "CAPI_READER_SCHEMA_DIR": str(SCHEMAS),
            "CAPI_API_BASE_URL": sandbox_url,
            "CAPI_ACCESS_TOKEN": TOKEN,
            "CAPI_DLQ_TOPIC": topics.dead_letter,
            "CAPI_HEALTH_HOST": "127.0.0.1",
            "CAPI_HEALTH_PORT": str(self.health_port),
            "CAPI_LINGER_MS": "50",
            "CAPI_RETRY_BACKOFF_BASE_MS": "50",
            "CAPI_RETRY_BACKOFF_CAP_MS": "500",
            # The poison records carry a schema id no registry knows: hold them briefly only.
            "CAPI_UNKNOWN_SCHEMA_RETRY_S": "2",
            "CAPI_LOG_LEVEL": "info",
            # A killed member is noticed after this long (librdkafka default 45 s).
            "CAPI_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "CAPI_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            **settings,
        }
        self.workdir = workdir
        self.server: Server | None = None
        self.starts = 0

    def start(self) -> ConsumerProcess:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPI_", "OTEL_"))}
        for name in ("CAPI_AVRO_DECODER", "CAPI_USER_DATA_HASHER"):
            if name in os.environ:  # `make test` runs one test without the compiled paths
                env[name] = os.environ[name]
        self.server = Server(
            "consumer",
            [sys.executable, "-m", "consumer", "run"],
            self.workdir / f"consumer-{self.health_port}-{self.starts}.log",
            env={**env, **self.env},
            cwd=ROOT,
        )
        wait_until(
            lambda: port_open(self.health_port), 60, "consumer", self.server.proc, self.server.log
        )
        return self

    @property
    def log(self) -> str:
        assert self.server is not None
        return self.server.log.read_text(errors="replace")

    def stats(self) -> dict[str, Any]:
        return dict(get_json(f"http://127.0.0.1:{self.health_port}/stats"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=10
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float = 120,
        what: str = "condition",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.server is not None
            if self.server.proc.poll() is not None:
                raise AssertionError(f"{self.exit_status()}:\n{self.log[-4000:]}")
            try:
                stats = self.stats()
            except OSError as exc:  # a busy moment on a 2-core machine: ask again
                stats = {"unanswered": str(exc)}
            else:
                if predicate(stats):
                    return stats
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; last stats {stats}\n{self.log[-3000:]}"
        )

    def wait_final(self, total: int, timeout_s: float = 120) -> dict[str, Any]:
        return self.wait_for(
            lambda s: (
                sum(s[k] for k in FINAL) >= total
                and s["unfinished_offsets"] == 0
                and s["uncommitted_partitions"] == 0
            ),
            timeout_s,
            f"{total} final fates, committed",
        )

    def exit_status(self) -> str:
        """How the process ended, naming the signal (a native crash leaves no Python trace)."""
        assert self.server is not None
        code = self.server.proc.poll()
        if code is None:
            return "consumer still running"
        if code < 0:
            return f"consumer killed by {signal.Signals(-code).name}"
        return f"consumer exited {code}"

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.server is not None
        self.server.proc.send_signal(signal.SIGTERM)
        try:
            return self.server.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"consumer still running {timeout_s:.0f} s after SIGTERM:\n{self.log[-6000:]}"
            ) from None

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()

    def stop(self) -> None:
        if self.server is not None and self.server.proc.poll() is None:
            self.server.stop()


# Answers that mean "the group coordinator is moving or not yet known": ask again.
_NOT_YET = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
    }
)


def _admin(kafka: KafkaBroker) -> Any:
    """One long-lived client per broker: it keeps its coordinator and metadata between calls."""
    return admin_client(kafka.bootstrap)


def _retry_not_yet(what: str, ask: Callable[[], Any], timeout_s: float) -> Any:
    """Call `ask` until it answers, treating coordinator moves and timeouts as "not yet"."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.05
    last_error: object = None
    while True:
        try:
            return ask()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NOT_YET:
                raise
            last_error = error
        except concurrent.futures.TimeoutError as exc:
            last_error = exc
        if time.monotonic() + delay_s > deadline:
            raise AssertionError(f"{what}: no answer in {timeout_s:.0f} s; last error {last_error}")
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)


def partitions_of(
    kafka: KafkaBroker, topics: list[str], timeout_s: float = 30
) -> list[tuple[str, int]]:
    """Every partition of `topics`, from the broker's metadata."""

    def ask() -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        for topic in topics:
            metadata = _admin(kafka).list_topics(topic, timeout=5).topics[topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            found.extend((topic, p) for p in sorted(metadata.partitions))
        return found

    return list(_retry_not_yet("topic metadata", ask, timeout_s))


def committed_offsets(
    kafka: KafkaBroker, group: str, topics: list[str], timeout_s: float = 30
) -> dict[tuple[str, int], int]:
    """The group's committed offset per partition (negative where it has none)."""
    wanted = [TopicPartition(t, p) for t, p in partitions_of(kafka, topics, timeout_s)]

    def ask() -> dict[tuple[str, int], int]:
        offsets = {}
        for tp in group_reader(kafka.bootstrap, group).committed(wanted, timeout=5):
            if tp.error is not None:
                raise KafkaException(tp.error)
            offsets[(tp.topic, tp.partition)] = tp.offset
        return offsets

    return dict(_retry_not_yet(f"committed offsets of {group}", ask, timeout_s))


def end_offsets(
    kafka: KafkaBroker, topics: list[str], timeout_s: float = 30
) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of `topics`."""
    wanted = partitions_of(kafka, topics, timeout_s)

    def ask() -> dict[tuple[str, int], int]:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in the library
        request = {TopicPartition(t, p): latest for t, p in wanted}
        answer = _admin(kafka).list_offsets(request, request_timeout=5)
        return {(tp.topic, tp.partition): f.result(10).offset for tp, f in answer.items()}

    return dict(_retry_not_yet("end offsets", ask, timeout_s))


def is_fully_committed(kafka: KafkaBroker, group: str, topics: list[str]) -> bool:
    """Every partition's committed offset is its end offset (empty partitions need none)."""
    committed = committed_offsets(kafka, group, topics)
    return all(end == 0 or committed[tp] == end for tp, end in end_offsets(kafka, topics).items())


def wait_fully_committed(
    kafka: KafkaBroker, group: str, topics: list[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_fully_committed(kafka, group, topics):
        assert time.monotonic() < deadline, f"group {group} never committed up to the end"
        time.sleep(0.3)


def read_all(
    kafka: KafkaBroker, topic: str, expected: int, timeout_s: float = 30
) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"read-{time.time()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    raw = message.headers() or []
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    headers = {k: v if isinstance(v, bytes) else b"" for k, v in pairs}
                    out.append((message.value() or b"", headers))
    finally:
        consumer.close()
    return out


def wire_header(schema_id: int) -> bytes:
    return struct.pack(">bI", 0, schema_id)


def redis_database(topics: Topics, redis_url: str) -> str:
    """A Redis database of its own for this test, emptied first: fifteen databases for many
    tests, whose sample streams share event ids, so a database may have been used before."""
    import redis

    url = redis_url.replace("/0", f"/{1 + sum(topics.orders.encode()) % 15}")
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url
