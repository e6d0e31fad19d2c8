"""A real single-node Apache Kafka broker (KRaft) from the Maven Central jars, on loopback.

python -m devenv.kafka fetch      # download jars into .kafka/libs (cached)
python -m devenv.kafka run        # start a broker and print its bootstrap address
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devenv.procs import (
    CACHE,
    ROOT,
    Server,
    free_port,
    port_open,
    serve_until_interrupted,
    wait_until,
)

LIBS = CACHE / "libs"
POM = ROOT / "devenv" / "kafka-pom.xml"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
"""


# librdkafka clients made by tests and tools live as long as the process (or their broker): one
# reclaimed by the cyclic garbage collector while Python runs on a librdkafka thread would be
# destroyed from its own thread (confluent-kafka-python issue 1761, pull request 2129).
_CLIENTS: dict[tuple[str, str], Any] = {}


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Around admin calls in tools (demo, bench): their results arrive as Python callbacks on a
    librdkafka thread, where a garbage collection could destroy a client from its own thread
    (a precaution, see tests/conftest.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def admin_client(bootstrap: str) -> Any:
    """The one AdminClient for `bootstrap` (plaintext), kept for the life of the process."""
    from confluent_kafka.admin import AdminClient

    key = ("admin", bootstrap)
    if key not in _CLIENTS:
        _CLIENTS[key] = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    return _CLIENTS[key]


def shared_producer(bootstrap: str) -> Any:
    """The one Producer for `bootstrap` (plaintext), kept for the life of the process."""
    from confluent_kafka import Producer

    key = ("producer", bootstrap)
    if key not in _CLIENTS:
        _CLIENTS[key] = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    return _CLIENTS[key]


def group_reader(bootstrap: str, group: str) -> Any:
    """A Consumer of `group` that never subscribes, kept to read the group's committed offsets.

    Not AdminClient.list_consumer_group_offsets: librdkafka 2.16 dereferences the missing
    consumer-group handle of an AdminClient when an OffsetFetch answers NOT_COORDINATOR and the
    process dies with SIGSEGV (seen in a core dump: rd_kafka_ListConsumerGroupOffsetsResponse_parse
    → rd_kafka_handle_OffsetFetch → rd_kafka_cgrp_op).
    """
    from confluent_kafka import Consumer

    key = (f"group:{group}", bootstrap)
    if key not in _CLIENTS:
        _CLIENTS[key] = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
    return _CLIENTS[key]


def release_clients(bootstrap: str) -> None:
    """Drop the clients for a broker that is going away (from the main thread: safe here)."""
    for kind, address in [k for k in _CLIENTS if k[1] == bootstrap]:
        client = _CLIENTS.pop((kind, address))
        if kind == "producer":
            client.flush(5)
        elif kind.startswith("group:"):
            client.close()  # a Consumer destroyed without close() can crash (issue 358)


def fetch_jars() -> Path:
    """Download kafka_2.13 and its runtime dependencies once; later calls reuse the cache."""
    marker = LIBS / ".complete"
    if marker.exists() and marker.read_text() == POM.read_text():
        return LIBS
    shutil.rmtree(LIBS, ignore_errors=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars")
    subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={LIBS}",
        ],
        check=True,
    )
    marker.write_text(POM.read_text())
    return LIBS


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("a Java 17+ runtime is needed for the Kafka broker")
    return java


class KafkaBroker:
    """Formats fresh KRaft storage in a temp dir and runs `kafka.Kafka` until `stop()`."""

    def __init__(
        self,
        workdir: Path | None = None,
        heap: str = "512m",
        extra_properties: dict[str, str] | None = None,
        extra_listeners: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.extra_properties = extra_properties or {}
        # name → (security protocol, port), e.g. {"SASL_SSL": ("SASL_SSL", 19094)}
        self.extra_listeners = extra_listeners or {}
        self.server: Server | None = None
        self.startup_s = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, (protocol, port) in self.extra_listeners.items():
            listeners.append(f"{name}://127.0.0.1:{port}")
            protocols.append(f"{name}:{protocol}")
        advertised = [x for x in listeners if not x.startswith("CONTROLLER")]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        props.update(self.extra_properties)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout_s: float = 90.0, format_args: list[str] | None = None) -> KafkaBroker:
        libs = fetch_jars()
        started = time.monotonic()
        config = self.workdir / "server.properties"
        config.write_text(self._properties())
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self.workdir / "server.log", level="INFO"))
        classpath = f"{libs}/*"
        java = _java()
        if not (self.workdir / "data" / "meta.properties").exists():
            cluster_id = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={log4j}",
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *(format_args or []),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        self.server = Server(
            "kafka",
            [
                java,
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                "-XX:+UseG1GC",
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            log=self.workdir / "stdout.log",
        )
        wait_until(
            self.is_ready, timeout_s, "kafka broker", self.server.proc, self.workdir / "server.log"
        )
        self.startup_s = time.monotonic() - started
        return self

    def is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        metadata = admin_client(self.bootstrap).list_topics(timeout=2)
        return len(metadata.brokers) == 1

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> None:
        with collector_paused():
            self._create_topic(name, partitions, config)

    def _create_topic(self, name: str, partitions: int, config: dict[str, str] | None) -> None:
        from confluent_kafka.admin import NewTopic

        futures = admin_client(self.bootstrap).create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        for future in futures.values():
            future.result(30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self, timeout_s: float = 90.0) -> None:
        self.stop()
        self.start(timeout_s)

    def cleanup(self) -> None:
        release_clients(self.bootstrap)
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command == "fetch":
        print(fetch_jars())
        return 0
    broker = KafkaBroker().start()
    return serve_until_interrupted(
        f"kafka ready at {broker.bootstrap} in {broker.startup_s:.1f}s (Ctrl-C stops it)",
        broker.cleanup,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
