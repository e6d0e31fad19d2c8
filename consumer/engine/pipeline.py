"""The one place where stages are wired: Kafka → admission (process: decode, map, normalize;
dedup) → batch → deliver, with every record's fate recorded by `fates.py`. Builds the stages from
`Config`, owns the long-lived tasks and the start-up and shutdown order; the source's commit and
rebalance calls go to `committer.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry

from consumer.config import Config
from consumer.conversion.quality import MatchQuality
from consumer.engine.admission import Admission
from consumer.engine.committer import CommitSettings, Committer
from consumer.engine.fates import Fates
from consumer.engine.insight import Insight
from consumer.engine.process import CHECK_EVERY_IN_RUN, RecordProcessor, hasher_for
from consumer.observability import telemetry as tm
from consumer.observability.health import HealthChecks, start_health_server
from consumer.records import (
    AdAccountId,
    Batch,
    Commit,
    Envelope,
    TopicPartition,
)
from consumer.stages.avroplan import decoder_in_use
from consumer.stages.batcher import Batcher
from consumer.stages.contract import Delivery, HoldingStage
from consumer.stages.deadletter import (
    DeadLetter,
    DeadLetterProducer,
    DeadLetterWriter,
    LoggedDeadLetters,
    PolledProducer,
    producer_settings,
)
from consumer.stages.decode import Decoder, RegistryClient, load_reader_schemas, load_schema_file
from consumer.stages.dedup import DedupStore, MemoryDedupStore
from consumer.stages.dedup_redis import RedisDedupStore
from consumer.stages.delivery import DeliveryClient
from consumer.stages.dryrun import DryRunDelivery
from consumer.stages.eqs import EqsPoller, EqsSettings
from consumer.stages.offsets import OffsetLedger
from consumer.stages.source import ClientFactory, KafkaSource, SourceSettings

logger = logging.getLogger(__name__)

# Past the drain's deadline, closing the clients (the dead-letter flush, leaving the group) may
# take this long; the manifests' grace period is CAPI_SHUTDOWN_GRACE_S plus this plus the
# exporters' flush (`telemetry.SHUTDOWN_TIMEOUT_S`).
CLOSE_MARGIN_S = 10.0
MIN_KAFKA_CLOSE_S = 2.0  # even a late close gets this long to leave the group cleanly


def dedup_store(
    backend: str,
    window_s: int,
    max_keys: int,
    redis_url: str | None,
    reads_legacy_keys: bool = True,
) -> DedupStore | None:
    """The store CAPI_DEDUP_BACKEND names: memory, redis, or none at all (off)."""
    if backend == "off":
        return None
    if backend == "redis":
        assert redis_url is not None, "config checks CAPI_REDIS_URL"
        return RedisDedupStore(redis_url, window_s, reads_legacy_keys=reads_legacy_keys)
    return MemoryDedupStore(window_s, max_keys)


@dataclass(frozen=True, slots=True)
class Edges:
    """The pipeline's I/O edges; the simulation (tests/simulation) passes in-memory models.

    Unset, each is the real one: `AIOConsumer`, the polled dead-letter `Producer`, one pooled
    aiohttp session, and the dedup store `CAPI_DEDUP_BACKEND` names (Redis, when shared).
    """

    kafka_consumer: ClientFactory | None = None
    dead_letter_producer: Callable[[dict[str, Any]], DeadLetterProducer] | None = None
    http_session: Callable[[], aiohttp.ClientSession] | None = None
    dedup_store: Callable[[], DedupStore] | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        telemetry: tm.Telemetry | None = None,
        prometheus: CollectorRegistry | None = None,
        edges: Edges = Edges(),
    ) -> None:
        self.config = config
        self.prometheus = prometheus or CollectorRegistry()
        self.telemetry = telemetry or tm.setup_telemetry(
            [PrometheusMetricReader(registry=self.prometheus)]
        )
        self.metrics = self.telemetry.instruments
        self._edges = edges
        self.ledger = OffsetLedger()
        backend = config.dedup_backend
        if backend == "redis" and not config.commits_offsets:
            # A dry run or test-mode run started with production's environment must not mark
            # keys delivered in the shared store: production would then drop those events as
            # duplicates. It dedups in a private in-memory store instead (issue 24).
            backend = "memory"
        self.dedup = (
            edges.dedup_store()
            if edges.dedup_store is not None and config.commits_offsets
            else dedup_store(
                backend,
                config.dedup_window_s,
                config.dedup_max_keys,
                config.redis_url,
                config.dedup_read_legacy_keys,
            )
        )
        self.quality = MatchQuality()
        self.crash: BaseException | None = None
        self.stop = asyncio.Event()
        self._shutdown_steps: dict[str, float] = {}  # step → when it ended (from the signal)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.processor = RecordProcessor(
            config.mapping,
            tracer=self.telemetry.tracer,
            records_spans=self.telemetry.records_spans,
            group_id=config.group_id,
            check_every=CHECK_EVERY_IN_RUN,
            hasher=hasher_for(config.mapping, mode=config.user_data_hasher),
        )
        self.batcher = Batcher(self._on_batch, config.batch_settings())
        kafka = {**config.kafka_client_config(), "logger": logging.getLogger("librdkafka")}
        self.dead_letters = DeadLetterWriter(
            producer_settings(kafka),
            config.dlq_topic if config.commits_offsets else config.trial_dlq_topic,
            self._on_dead_lettered,
            producer_factory=_dead_letter_producer(config, edges),
            is_wanted=lambda letter: self.ledger.owns(
                letter.envelope.coords.topic_partition, letter.envelope.generation
            ),
        )
        self.fates = Fates(
            self.ledger,
            self.dedup,
            self.metrics,
            self.dead_letters.submit,
            self.batcher.release,
            self._spawn,
            config.dlq_max_run,
            self.batcher.submit,
        )
        self.admission = Admission(
            self.processor,
            self.dedup,
            self.ledger,
            self.fates,
            self.quality,
            [self.batcher, self.dead_letters],
        )
        self.source = KafkaSource(
            {**kafka, "group.id": config.group_id, "auto.offset.reset": config.auto_offset_reset},
            config.topics,
            self,
            SourceSettings(config.consume_batch_size, config.commit_interval_ms / 1000),
            client_factory=edges.kafka_consumer,
        )
        self.committer = Committer(
            CommitSettings(
                config.commits_offsets, config.commit_interval_ms / 1000, config.revoke_timeout_s
            ),
            self.ledger,
            self.source,
            self.admission,
            self.batcher,
            self.fates,
            self.metrics,
        )
        self.delivery: Delivery | None = None
        self.session: aiohttp.ClientSession | None = None
        self.insight = Insight(
            self.source,
            self.ledger,
            self.batcher,
            self.fates,
            self.quality,
            self.processor,
            lambda: self.delivery.halted if self.delivery is not None else {},
            config.paused_unready_s,
            config.lost_unready_s,
            config.commits_offsets,
            self.dead_letters,
        )
        self.telemetry.add_gauges(self.insight.gauges)

    def _session(self) -> aiohttp.ClientSession:
        """One pooled session for every request of the process (aiohttp's advice)."""
        config = self.config
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=config.http_pool_size,
                limit_per_host=config.http_pool_size,
                ttl_dns_cache=300,
                keepalive_timeout=60,
            ),
            timeout=aiohttp.ClientTimeout(
                total=config.http_timeout_s, sock_connect=config.http_connect_timeout_s
            ),
            json_serialize=lambda _: "",  # bodies are pre-encoded bytes; never json= here
        )

    async def run(self) -> None:
        """Run until `stop` is set, then drain within the grace period and commit."""
        config = self.config
        self.session = self._edges.http_session() if self._edges.http_session else self._session()
        settings = config.delivery_settings()
        if config.is_dry_run:
            self.delivery = DryRunDelivery(
                settings, self.fates.answered, lambda line: print(line, file=sys.stdout, flush=True)
            )
        else:
            self.delivery = DeliveryClient(
                self.session,
                settings,
                lambda a: config.token_for(a),
                self.fates.answered,
                self.telemetry,
                on_crash=self._crashed,
                is_wanted=lambda c: self.ledger.owns(
                    (c.envelope.coords.topic, c.envelope.coords.partition), c.envelope.generation
                ),
            )
        self.processor.decoder = Decoder(
            self._registry(self.session),
            {t: load_schema_file(p) for t, p in config.local_schemas.items()},
            load_reader_schemas(config.reader_schema_dir),
            unknown_schema_grace_s=config.unknown_schema_retry_s,
            mode=config.avro_decoder,
        )
        health = None
        if config.health_port:
            insight = self.insight
            health = await start_health_server(
                HealthChecks(insight.liveness, insight.readiness, insight.stats, self.prometheus),
                config.health_host,
                config.health_port,
            )
        self.dead_letters.start()
        await self.source.start()
        logger.info(
            "consumer started",
            extra={
                "topics": list(config.topics),
                "group_id": config.group_id,
                "commits_offsets": config.commits_offsets,
                # fastavro alone decodes about 6x slower: say so when the extension is missing
                "avro_decoder": decoder_in_use(config.avro_decoder),
                "user_data_hasher": self.processor.hasher.implementation,
            },
        )
        if custom := config.mapping.custom_event_names():
            logger.info(
                "custom event names configured: each must exist in Ads Manager, mapped to a "
                "standard event, or Pinterest refuses its events",
                extra={"custom_event_names": custom},
            )
        if not config.commits_offsets:
            mode = "dry run" if config.is_dry_run else "test mode"
            print(
                f"{mode}: the offsets of group {config.group_id} are read, never committed",
                file=sys.stderr,
                flush=True,
            )
        try:
            async with asyncio.TaskGroup() as group:
                source = group.create_task(self.source.run(self.stop))
                linger = group.create_task(self.batcher.run())
                quality_score = self._event_quality_score(group)
                await self.stop.wait()
                # One budget from the signal on: a revoke running in the source's last turn
                # shares it with the drain (the pod's grace period counts from the signal).
                self._shutdown_steps["signal"] = time.monotonic()
                deadline_s = time.monotonic() + config.shutdown_grace_s
                self.committer.shutdown_deadline_s = deadline_s
                logger.info("stopping", extra={"grace_s": config.shutdown_grace_s})
                await source
                self._shutdown_steps["last_turn"] = time.monotonic()
                await self._drain(deadline_s)
                self._shutdown_steps["drain"] = time.monotonic()
                linger.cancel()
                if quality_score is not None:
                    quality_score.cancel()
        finally:
            await self._close(health)
            self._log_shutdown()
        if self.crash is not None:
            raise RuntimeError(
                "a delivery task failed; exiting so the pod restarts"
            ) from self.crash

    def _event_quality_score(self, group: asyncio.TaskGroup) -> asyncio.Task[None] | None:
        """Pinterest's event quality score, polled for the accounts we build events for, when
        a read token is configured (`stages/eqs.py`)."""
        config = self.config
        if config.eqs_token is None or config.is_dry_run or self.session is None:
            return None
        settings = EqsSettings(
            config.api_base_url, config.eqs_token, config.eqs_interval_s, config.eqs_lookback
        )
        poller = EqsPoller(self.session, settings, lambda: (a for a, _ in self.quality.events))
        self.telemetry.add_gauges(poller.gauges)
        self.insight.event_quality = poller.worst

        async def poll() -> None:
            # A side reading: a bug in it stops the reading, never the consumer.
            try:
                await poller.run()
            except Exception:
                logger.exception("reading Pinterest's event quality score stopped")

        return group.create_task(poll())

    def _registry(self, session: aiohttp.ClientSession) -> RegistryClient | None:
        config = self.config
        if not config.schema_registry_url:
            return None
        auth = None
        if config.schema_registry_auth is not None:
            user, _, password = config.schema_registry_auth.reveal().partition(":")
            auth = (user, password)
        return RegistryClient(session, config.schema_registry_url, auth)

    def _crashed(self, exc: BaseException) -> None:
        """A bug, not bad data: stop, commit what is final, exit non-zero (Kubernetes restarts
        us and the ledger makes that safe)."""
        logger.error("delivery task failed", exc_info=exc)
        self.crash = exc
        self.stop.set()

    async def _drain(self, deadline_s: float) -> None:
        assert self.delivery is not None
        self.admission.forget(None)
        is_drained = True
        # In the order work flows: batches to delivery, whose failures go to dead letters.
        for stage in self._holding_stages():
            is_drained = await stage.drain(deadline_s) and is_drained
        await self._settle_background(deadline_s)
        await self.committer.commit()
        logger.info(
            "drained", extra={"complete": is_drained, "unfinished": self.ledger.unfinished()}
        )

    def _holding_stages(self) -> list[HoldingStage[Any]]:
        """The stages holding work whose fate is not final, in the order work flows."""
        assert self.delivery is not None
        return [self.batcher, self.delivery, self.dead_letters]

    async def _close(self, health: Any) -> None:
        # The dead-letter producer flushes first: acknowledgements that arrive during its flush
        # are then final before closing the source revokes every partition, whose commit
        # carries them (issue 23, defect 7); flushed after, they waited for the next start.
        await self.dead_letters.close()
        self._shutdown_steps["dead_letters_close"] = time.monotonic()
        # Leaving the group gets what is left of the close margin past the drain's deadline,
        # so the whole shutdown fits in the grace period plus `CLOSE_MARGIN_S`.
        close_by = (self.committer.shutdown_deadline_s or time.monotonic()) + CLOSE_MARGIN_S
        await self.source.close(max(MIN_KAFKA_CLOSE_S, close_by - time.monotonic()))
        self._shutdown_steps["kafka_close"] = time.monotonic()
        if self.delivery is not None:
            await self.delivery.close()
        if self.dedup is not None:
            await self.dedup.close()
        if self.session is not None:
            await self.session.close()
            await asyncio.sleep(0.05)  # let the connector close its transports (aiohttp docs)
        if health is not None:
            await health.cleanup()
        self._shutdown_steps["other_close"] = time.monotonic()

    def _log_shutdown(self) -> None:
        """How long each step of the shutdown took: a slow exit names its step."""
        steps = list(self._shutdown_steps.items())
        if not steps or steps[0][0] != "signal":
            return  # a crash, not a signal, ended the run
        took = {
            f"{step}_s": round(at - before, 3)
            for (_, before), (step, at) in itertools.pairwise(steps)
        }
        logger.info("stopped", extra=took)

    async def _settle_background(self, deadline_s: float) -> None:
        while self._tasks and time.monotonic() < deadline_s:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline_s - time.monotonic()))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_batch(self, batch: Batch) -> None:
        assert self.delivery is not None
        self.metrics.batch_size.record(len(batch))
        self.delivery.submit(batch)

    def _on_dead_lettered(self, letter: DeadLetter) -> None:
        self.fates.dead_lettered(letter)

    async def handle(self, envelopes: list[Envelope]) -> int:
        """The source's envelopes go to admission (`SourceOwner.handle`)."""
        return await self.admission.handle(envelopes)

    async def commit_due(self) -> None:
        await self.committer.commit_due()

    def on_committed(self, committed: dict[TopicPartition, Commit]) -> None:
        self.committer.on_committed(committed)

    async def on_assign(self, partitions: list[tuple[TopicPartition, int, Commit | None]]) -> None:
        await self.committer.on_assign(partitions)

    async def on_revoke(self, partitions: list[TopicPartition]) -> None:
        await self.committer.on_revoke(partitions)

    async def on_lost(self, partitions: list[TopicPartition]) -> None:
        await self.committer.on_lost(partitions)


def _dead_letter_producer(
    config: Config, edges: Edges
) -> Callable[[dict[str, Any]], DeadLetterProducer]:
    """A trial run (dry run, test mode) writes no dead letters to the production topic, which
    is replayed from: it logs them, or writes them to `CAPI_TRIAL_DLQ_TOPIC` when that is set."""
    if not config.commits_offsets and not config.trial_dlq_topic:
        return lambda _config: LoggedDeadLetters()
    return edges.dead_letter_producer or PolledProducer


__all__ = ["AdAccountId", "Pipeline"]
