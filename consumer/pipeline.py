"""The one place where stages are wired: Kafka → decode → map → normalize → dedup → batch →
deliver, with every record's fate fed back to the offset ledger. Owns the long-lived tasks and the
start-up and shutdown order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from consumer import telemetry as tm
from consumer.batcher import Batcher
from consumer.capi import InvalidEvent, validate_event
from consumer.config import Config
from consumer.deadletter import DeadLetter, DeadLetterWriter
from consumer.decode import Decoder, RegistryClient, load_reader_schemas, load_schema_file
from consumer.dedup import DedupKey, DedupStore, MemoryDedupStore, key_of
from consumer.delivery import DeliveryClient, DeliverySettings, DryRunDelivery
from consumer.errors import PermanentError
from consumer.health import STATES, HealthChecks, ReadinessFacts, assess, start_health_server
from consumer.mapping import MappingRules, map_record
from consumer.normalize import normalize_conversion
from consumer.offsets import OffsetLedger
from consumer.quality import MatchQuality
from consumer.records import (
    AdAccountId,
    Batch,
    BatchResult,
    Commit,
    Conversion,
    Decoded,
    Envelope,
    Fate,
    Skip,
    TopicPartition,
)
from consumer.source import KafkaSource
from consumer.userdata import NormalizeOptions, UserDataHasher

logger = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
LIVENESS_STALL_S = 60.0
ALREADY_FINAL = "offset.already_final"  # skipped: marked final in the last commit's map


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


def _is_consumer_only(setting: str) -> bool:
    """librdkafka consumer settings the dead-letter producer would warn about."""
    return setting.startswith(_CONSUMER_ONLY)


def build_conversion(
    decoded: Decoded, mapping: MappingRules, hasher: UserDataHasher, now_s: int
) -> Conversion | Skip:
    """map → normalize → validate one decoded record (pure). Raises `PermanentError`."""
    mapped = map_record(decoded, mapping, now_s)
    if isinstance(mapped, Skip):
        return mapped
    conversion = normalize_conversion(mapped, hasher)
    try:
        validate_event(conversion.event, now_s, mapping.max_future_skew_s)
    except InvalidEvent as exc:
        raise PermanentError("validate.invalid_event", str(exc)) from None
    return conversion


def _build_dedup(config: Config) -> DedupStore | None:
    if config.dedup_backend == "off":
        return None
    if config.dedup_backend == "redis":
        from consumer.dedup_redis import RedisDedupStore

        assert config.redis_url is not None
        return RedisDedupStore(config.redis_url, config.dedup_window_s)
    return MemoryDedupStore(config.dedup_window_s, config.dedup_max_keys)


class Pipeline:
    def __init__(
        self,
        config: Config,
        telemetry: tm.Telemetry | None = None,
        prometheus: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.prometheus = prometheus or CollectorRegistry()
        self.telemetry = telemetry or tm.setup_telemetry(
            [PrometheusMetricReader(registry=self.prometheus)]
        )
        self.telemetry.add_gauges(self._gauges)
        self.metrics = self.telemetry.instruments
        self.ledger = OffsetLedger()
        self.hasher = UserDataHasher(
            NormalizeOptions(config.mapping.default_phone_country, config.mapping.dob_order)
        )
        self.dedup = _build_dedup(config)
        self.counts: Counter[str] = Counter()
        self.quality = MatchQuality()
        self.dlq_run = 0
        self.halt_reason: str | None = None
        self._shutdown_deadline_s: float | None = None
        self.crash: BaseException | None = None
        self.started_s = time.monotonic()
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batcher = Batcher(
            self._on_batch,
            config.batch_max_events,
            config.batch_max_bytes,
            config.linger_ms / 1000,
            config.backlog_high_watermark,
            config.backlog_low_watermark,
        )
        kafka = {**config.kafka_client_config(), "logger": logging.getLogger("librdkafka")}
        self.dead_letters = DeadLetterWriter(
            {k: v for k, v in kafka.items() if not _is_consumer_only(k)},
            config.dlq_topic,
            self._on_dead_lettered,
        )
        self.source = KafkaSource(
            {**kafka, "group.id": config.group_id, "auto.offset.reset": config.auto_offset_reset},
            config.topics,
            self.handle,
            self._commit,
            self._on_assign,
            self._on_revoke,
            self._on_lost,
            batch_size=config.consume_batch_size,
            commit_interval_s=config.commit_interval_ms / 1000,
        )
        self.delivery: DeliveryClient | DryRunDelivery | None = None
        self.decoder: Decoder | None = None
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Run until `stop` is set, then drain within the grace period and commit."""
        config = self.config
        self.session = aiohttp.ClientSession(
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
        settings = DeliverySettings(
            config.api_base_url,
            config.is_test_mode,
            config.max_in_flight_per_account,
            config.rate_limit_per_minute,
            config.retry_backoff_base_ms / 1000,
            config.retry_backoff_cap_ms / 1000,
            config.auth_retry_s,
            config.max_retry_age_s,
        )
        if config.is_dry_run:
            self.delivery = DryRunDelivery(
                settings, self._on_result, lambda line: print(line, file=sys.stdout, flush=True)
            )
        else:
            self.delivery = DeliveryClient(
                self.session,
                settings,
                lambda a: config.token_for(a),
                self._on_result,
                self.telemetry,
                on_crash=self._crashed,
            )
        registry = None
        if config.schema_registry_url:
            auth = None
            if config.schema_registry_auth is not None:
                user, _, password = config.schema_registry_auth.reveal().partition(":")
                auth = (user, password)
            registry = RegistryClient(self.session, config.schema_registry_url, auth)
        self.decoder = Decoder(
            registry,
            {t: load_schema_file(p) for t, p in config.local_schemas.items()},
            load_reader_schemas(config.reader_schema_dir),
        )
        health = None
        if config.health_port:
            health = await start_health_server(
                HealthChecks(self.liveness, self.readiness, self.stats, self.prometheus),
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
            },
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
                timers = [group.create_task(self.batcher.run())]
                await self.stop.wait()
                await source
                self._shutdown_deadline_s = time.monotonic() + config.shutdown_grace_s
                await self._drain(self._shutdown_deadline_s)
                for timer in timers:
                    timer.cancel()
        finally:
            await self._close(health)
        if self.crash is not None:
            raise RuntimeError(
                "a delivery task failed; exiting so the pod restarts"
            ) from self.crash

    def _crashed(self, exc: BaseException) -> None:
        """A bug, not bad data: stop, commit what is final, exit non-zero (Kubernetes restarts
        us and the ledger makes that safe)."""
        logger.error("delivery task failed", exc_info=exc)
        self.crash = exc
        self.stop.set()

    async def _drain(self, deadline_s: float) -> None:
        assert self.delivery is not None
        self.batcher.flush()
        is_drained = await self.delivery.drain(deadline_s)
        is_drained = await self.dead_letters.drain(deadline_s) and is_drained
        await self._settle_background(deadline_s)
        await self._commit()
        logger.info(
            "drained", extra={"complete": is_drained, "unfinished": self.ledger.unfinished()}
        )

    async def _close(self, health: Any) -> None:
        await self.source.close()
        if self.delivery is not None:
            await self.delivery.close()
        self.dead_letters.close()
        if self.dedup is not None:
            await self.dedup.close()
        if self.session is not None:
            await self.session.close()
            await asyncio.sleep(0.05)  # let the connector close its transports (aiohttp docs)
        if health is not None:
            await health.cleanup()

    async def _settle_background(self, deadline_s: float) -> None:
        while self._tasks and time.monotonic() < deadline_s:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline_s - time.monotonic()))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _build(self, envelope: Envelope, now_s: int) -> Conversion | Skip | PermanentError:
        """decode → map → normalize → validate for one envelope (pure apart from its span)."""
        assert self.decoder is not None
        span = None
        if envelope.traceparent is not None:
            parent = _PROPAGATOR.extract({"traceparent": envelope.traceparent})
            coords = envelope.coords
            span = self.telemetry.tracer.start_span(
                tm.SPAN_PROCESS.format(topic=coords.topic),
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    tm.ATTR_MESSAGING_SYSTEM: "kafka",
                    tm.ATTR_MESSAGING_OPERATION: "process",
                    tm.ATTR_DESTINATION: coords.topic,
                    tm.ATTR_PARTITION: str(coords.partition),
                    tm.ATTR_OFFSET: coords.offset,
                    tm.ATTR_CONSUMER_GROUP: self.config.group_id,
                },
            )
        try:
            decoded = self.decoder.decode(envelope)
            built = build_conversion(decoded, self.config.mapping, self.hasher, now_s)
            if span is not None and isinstance(built, Conversion):
                built = _with_span(built, span.get_span_context())
            result: Conversion | Skip | PermanentError = built
        except PermanentError as exc:
            result = exc
        if span is not None:
            if isinstance(result, PermanentError):
                span.set_attribute(tm.ATTR_ERROR_TYPE, result.reason)
            elif isinstance(result, Skip):
                span.set_attribute(tm.ATTR_REASON, result.reason)
            span.end()
        return result

    async def handle(self, envelopes: list[Envelope]) -> int:
        """Take a consumed chunk; returns how many were accepted (the rest are held and retried).

        Raises `TransientError` (registry or Redis down) before anything was accepted.
        """
        if self.halt_reason is not None or self._is_full():
            return 0  # hold the chunk without decoding it again on every turn
        assert self.decoder is not None
        is_final_already = self.ledger.is_final_already
        await self.decoder.prepare([e for e in envelopes if not is_final_already(e.coords)])
        now_s = int(time.time())
        with self.telemetry.tracer.start_as_current_span(
            tm.SPAN_PROCESS_CHUNK,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                tm.ATTR_MESSAGING_SYSTEM: "kafka",
                tm.ATTR_MESSAGING_OPERATION: "process",
                tm.ATTR_BATCH_COUNT: len(envelopes),
                tm.ATTR_CONSUMER_GROUP: self.config.group_id,
            },
        ):
            # Offsets an earlier owner finished (the commit's map) are not decoded or sent again.
            built = [
                Skip(e.coords, ALREADY_FINAL)
                if is_final_already(e.coords)
                else self._build(e, now_s)
                for e in envelopes
            ]
            conversions = [b for b in built if isinstance(b, Conversion)]
            claims = iter(
                await self.dedup.claim_many([key_of(c) for c in conversions])
                if self.dedup is not None
                else [True] * len(conversions)
            )
            return self._admit(envelopes, built, claims)

    def _admit(
        self,
        envelopes: list[Envelope],
        built: list[Conversion | Skip | PermanentError],
        claims: Any,
    ) -> int:
        accepted = 0
        unaccepted_claims: list[DedupKey] = []
        for envelope, result in zip(envelopes, built, strict=True):
            is_claimed = next(claims) if isinstance(result, Conversion) else False
            if self._is_full() or self.halt_reason is not None:
                if is_claimed:
                    assert isinstance(result, Conversion)
                    unaccepted_claims.append(key_of(result))
                continue
            self.ledger.track(envelope.coords, envelope.generation)
            accepted += 1
            if isinstance(result, Skip):
                self.counts["skipped"] += 1
                if result.reason is ALREADY_FINAL:
                    self.counts["already_final"] += 1
                self.metrics.skipped.add(1, {"reason": result.reason})
                self._finish(envelope, Fate.SKIPPED)
            elif isinstance(result, PermanentError):
                self._dead_letter(DeadLetter(envelope, result.reason, result.detail))
            elif not is_claimed:
                self.counts["deduplicated"] += 1
                self.metrics.deduplicated.add(1)
                self._finish(envelope, Fate.DUPLICATE)
            else:
                self.quality.observe(
                    result.ad_account, result.event_name, result.event["user_data"], result.dropped
                )
                self.batcher.submit(result)
        consumed_by_topic = Counter(e.coords.topic for e in envelopes[:accepted])
        for topic, count in consumed_by_topic.items():
            self.metrics.consumed.add(count, {"topic": topic})
        if unaccepted_claims and self.dedup is not None:
            self._spawn(self.dedup.release_many(unaccepted_claims))
        self.counts["consumed"] += accepted
        return accepted

    def _is_full(self) -> bool:
        return (
            self.batcher.is_backpressured
            or self.dead_letters.pending >= self.dead_letters.max_pending
        )

    def _finish(self, envelope: Envelope, fate: Fate) -> None:
        self.ledger.finish(envelope.coords, envelope.generation, fate)
        if fate is not Fate.DEAD_LETTERED:
            self.dlq_run = 0

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.counts["failed"] += 1
        self.metrics.failed.add(1, {"reason": letter.reason})
        self.dead_letters.submit(letter, is_forced=True)
        self.dlq_run += 1
        limit = self.config.dlq_max_run
        if limit and self.dlq_run >= limit and self.halt_reason is None:
            self.halt_reason = f"{self.dlq_run} dead letters in a row (CAPI_DLQ_MAX_RUN={limit})"
            logger.error("halted: dead-letter ceiling reached", extra={"reason": self.halt_reason})

    def _on_batch(self, batch: Batch) -> None:
        assert self.delivery is not None
        self.metrics.batch_size.record(len(batch))
        self.delivery.submit(batch)

    def _on_result(self, result: BatchResult) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        delivered: list[DedupKey] = []
        failed: list[DedupKey] = []
        per_account = Counter[str]()
        oldest_event_s = min(c.event_time_s for c in result.batch.conversions)
        self.metrics.event_to_ack_s.record(max(0.0, now_wall - oldest_event_s))
        record_consume_to_ack = self.metrics.consume_to_ack_s.record
        for conversion, outcome in zip(result.batch.conversions, result.outcomes, strict=True):
            envelope = conversion.envelope
            if outcome.status == "processed":
                delivered.append(key_of(conversion))
                per_account[conversion.event_name] += 1
                if outcome.message:
                    self.metrics.warnings.add(1, {"ad_account": result.batch.ad_account})
                record_consume_to_ack(max(0.0, now_mono - envelope.consumed_at_s))
                self._finish(envelope, Fate.DELIVERED)
            else:
                failed.append(key_of(conversion))
                self._dead_letter(
                    DeadLetter(envelope, outcome.reason, outcome.message, result.request_id)
                )
        for event_name, count in per_account.items():
            self.metrics.delivered.add(
                count, {"ad_account": result.batch.ad_account, "event_name": event_name}
            )
        self.counts["delivered"] += len(delivered)
        self.batcher.release(len(result.batch))
        if self.dedup is not None:
            if delivered:
                self._spawn(self.dedup.confirm_many(delivered))
            if failed:
                self._spawn(self.dedup.release_many(failed))

    def _on_dead_lettered(self, letter: DeadLetter) -> None:
        self.counts["dead_lettered"] += 1
        self.metrics.dead_lettered.add(1, {"reason": letter.reason})
        self.ledger.finish(letter.envelope.coords, letter.envelope.generation, Fate.DEAD_LETTERED)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if not self.config.commits_offsets:
            return
        commits = self.ledger.commits()
        if only is not None:
            commits = {tp: c for tp, c in commits.items() if tp in only}
        if commits:
            committed = await self.source.commit(commits)
            self.ledger.mark_committed(committed)
            self.metrics.committed.add(len(committed))

    async def _on_assign(self, partitions: list[tuple[TopicPartition, int, Commit | None]]) -> None:
        for tp, generation, committed in partitions:
            self.ledger.assign(tp, generation, committed)

    async def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Flush, wait (one deadline for every step) for their in-flight work, commit, forget."""
        deadline = time.monotonic() + self.config.revoke_timeout_s
        if self._shutdown_deadline_s is not None:  # closing: share the one shutdown budget
            deadline = min(deadline, self._shutdown_deadline_s)
        started = time.monotonic()
        self.batcher.flush()
        # Fates arrive from delivery and the dead-letter writer alike.
        # The source loop, which commits every 100 ms, waits inside this callback: keep
        # committing here, so answers that arrive during a long drain are recorded promptly.
        next_commit_s = time.monotonic() + self.config.commit_interval_ms / 1000
        while time.monotonic() < deadline and any(self.ledger.unfinished(tp) for tp in partitions):
            await asyncio.sleep(0.01)
            if time.monotonic() >= next_commit_s:
                next_commit_s = time.monotonic() + self.config.commit_interval_ms / 1000
                await self._commit()
        unfinished = sum(self.ledger.unfinished(tp) for tp in partitions)
        await self._commit(set(partitions))
        logger.info(
            "revoke drained",
            extra={
                "partitions": [f"{t}/{p}" for t, p in partitions],
                "unfinished": unfinished,
                "waited_s": round(time.monotonic() - started, 3),
                "committed": {f"{t}/{p}": self.ledger.committed((t, p)) for t, p in partitions},
            },
        )
        for tp in partitions:
            self.ledger.revoke(tp)

    async def _on_lost(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.ledger.lose(tp)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled_s = time.monotonic() - self.source.last_turn_s
        return stalled_s < LIVENESS_STALL_S, {"source_stalled_s": round(stalled_s, 1)}

    def _readiness_state(self) -> tuple[str, str]:
        source, now = self.source, time.monotonic()

        def lasted(since: float | None) -> float | None:
            return None if since is None else now - since

        halted = self.delivery.halted if self.delivery is not None else {}
        return assess(
            ReadinessFacts(
                halt_reason=self.halt_reason,
                halted_accounts=tuple(sorted(halted)),
                broker_down_s=lasted(source.broker_down_since),
                missing_topics=tuple(sorted(source.missing_topics)),
                transient_failing_s=lasted(source.transient_since),
                transient_error=source.transient_error,
                all_paused_s=lasted(source.all_paused_since),
                paused_unready_s=self.config.paused_unready_s,
                is_joined=source.is_joined,
                assigned=len(source.assigned),
            )
        )

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        state, reason = self._readiness_state()
        halted = dict(self.delivery.halted) if self.delivery is not None else {}
        detail: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "assigned_partitions": len(self.source.assigned),
            "paused_partitions": len(self.source.paused),
            "halted_accounts": halted,
        }
        if self.halt_reason:
            detail["halted"] = self.halt_reason
        return STATES[state], detail

    def stats(self) -> dict[str, Any]:
        return {
            **{
                k: self.counts[k]
                for k in (
                    "consumed",
                    "delivered",
                    "deduplicated",
                    "skipped",
                    "already_final",
                    "failed",
                    "dead_lettered",
                )
            },
            "pending": self.batcher.pending,
            "unfinished_offsets": self.ledger.unfinished(),
            "uncommitted_partitions": self.ledger.uncommitted()
            if self.config.commits_offsets
            else 0,
            "assigned": sorted(f"{t}/{p}" for t, p in self.source.assigned),
            "paused": len(self.source.paused),
            "held": self.source.held,
            "lag": {f"{t}/{p}": lag for (t, p), lag in self.source.lag.items()},
            "halted_accounts": dict(self.delivery.halted) if self.delivery else {},
            "halted": self.halt_reason,
            "match_coverage": {k: round(v, 4) for k, v in self.quality.coverage().items()},
            "normalize_dropped": {f"{f}/{r}": n for (f, r), n in self.quality.dropped.items()},
            "uptime_s": round(time.monotonic() - self.started_s, 1),
        }

    def _gauges(self) -> list[tuple[str, float, dict[str, str]]]:
        state, _ = self._readiness_state()  # once: ready and the per-state series agree
        gauges: list[tuple[str, float, dict[str, str]]] = [
            (tm.M_IN_FLIGHT, float(self.ledger.unfinished()), {}),
            (tm.M_PAUSED, float(len(self.source.paused)), {}),
            (tm.M_HALTED, float(len(self.delivery.halted) if self.delivery else 0), {}),
            (tm.M_READY, float(STATES[state]), {}),
            # One series per readiness state, 1 for the current one: alerts select by state.
            *[(tm.M_STATE, float(s == state), {"state": s}) for s in STATES],
            (tm.M_OFFSET_MAP_OVERFLOW, float(self.ledger.map_overflows), {}),
        ]
        for (topic, partition), lag in self.source.lag.items():
            gauges.append((tm.M_LAG, float(lag), {"topic": topic, "partition": str(partition)}))
        quality = self.quality
        for (account, event_name), count in quality.events.items():
            labels = {"ad_account": account, "event_name": event_name}
            gauges.append((tm.M_MATCH_EVENTS, float(count), labels))
        for (account, event_name, identifier), count in quality.by_identifier.items():
            labels = {"ad_account": account, "event_name": event_name, "identifier": identifier}
            gauges.append((tm.M_MATCH_IDENTIFIER, float(count), labels))
        for (account, event_name, carried), count in quality.by_count.items():
            labels = {"ad_account": account, "event_name": event_name, "identifiers": str(carried)}
            gauges.append((tm.M_MATCH_COUNT, float(count), labels))
        for (field, reason), count in quality.dropped.items():
            gauges.append(
                (tm.M_NORMALIZE_DROPPED, float(count), {"field": field, "reason": reason})
            )
        return gauges


def _with_span(conversion: Conversion, context: trace.SpanContext) -> Conversion:
    return dataclasses.replace(conversion, span_context=context)


__all__ = ["AdAccountId", "Pipeline"]
