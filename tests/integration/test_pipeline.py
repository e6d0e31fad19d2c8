"""`consumer run` end to end: real Kafka, real schema registry, the sandbox over loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from consumer.stages.avroplan import decoder_in_use
from devenv.kafka import KafkaBroker
from devenv.redis import RedisServer
from devenv.registry import SchemaRegistry
from tests.integration.rig import (
    ConsumerProcess,
    SandboxProcess,
    Topics,
    committed_offsets,
    is_fully_committed,
    produce_traffic,
    read_all,
    redis_database,
)

POISON = [b"\x00\x00\x0f\x42\x3fgarbage", b"plain text, not avro", b"\x00\x00\x00\x00\x01"]


def test_pipeline_end_to_end_delivers_exactly_what_mapping_says(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    traffic = produce_traffic(kafka, registry.url, topics, 3000, seed=11, poison=POISON)
    consumer = ConsumerProcess(tmp_path, kafka, topics, registry.url, sandbox.url, "e2e").start()
    try:
        stats = consumer.wait_final(len(traffic.produced))
        assert consumer.terminate() == 0
    finally:
        consumer.stop()
    # `make test` runs this test twice: with the compiled decoder, and with fastavro alone.
    assert f'"avro_decoder":"{decoder_in_use()}"' in consumer.log
    accepted = {(e["ad_account_id"], e["event"]["event_id"]): e["event"] for e in sandbox.events()}
    assert set(accepted) == traffic.expected_ids
    for key, event in traffic.events.items():
        assert accepted[key] == event, key
    sandbox_stats = sandbox.stats()
    assert sandbox_stats["duplicates_received"] == 0
    assert stats["deduplicated"] > 0  # the sample stream re-sends ~5% of records
    assert stats["dead_lettered"] == sum(p.outcome == "error" for p in traffic.produced)
    assert is_fully_committed(kafka, "e2e", topics.all)
    dead = read_all(kafka, topics.dead_letter, len(POISON))
    reasons = sorted(h["capi.reason"].decode() for _, h in dead)
    assert reasons == [
        "decode.bad_magic_byte",
        "decode.trailing_bytes",
        "decode.unknown_schema_id",
    ] or len(reasons) == len(POISON)
    assert {v for v, _ in dead} == set(POISON)
    for _, headers in dead:
        assert headers["capi.original.topic"].decode() == topics.orders
        assert headers["capi.original.offset"].decode().isdigit()


def test_a_rule_with_also_delivers_every_event_of_a_record_and_commits_after_the_last(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    """One record, several events (issue 25): an order is a checkout, and for every other
    order a custom event with its own id and custom_data, over real Kafka and HTTP."""
    document = yaml.safe_load(topics.mapping.read_text())
    document["topics"][0]["also"] = [
        {
            "event_name": "first_purchase",
            "event_id": "{order_id}-first",
            "when": {"field": "order_id", "matches": "[02468]$"},
            "custom_data": {"value": "total", "currency": "currency"},
        }
    ]
    topics.mapping.write_text(yaml.safe_dump(document))
    traffic = produce_traffic(kafka, registry.url, topics, 1500, seed=25)
    custom = {k for k, e in traffic.events.items() if e["event_name"] == "first_purchase"}
    assert len(custom) > 100
    consumer = ConsumerProcess(tmp_path, kafka, topics, registry.url, sandbox.url, "also").start()
    try:
        consumer.wait_final(len(traffic.produced))
        assert consumer.terminate() == 0
    finally:
        consumer.stop()
    assert "first_purchase" in consumer.log  # announced at start-up as a custom name
    accepted = {(e["ad_account_id"], e["event"]["event_id"]): e["event"] for e in sandbox.events()}
    assert set(accepted) == traffic.expected_ids
    for key in custom:
        assert accepted[key] == traffic.events[key]
        checkout = accepted[(key[0], key[1].removesuffix("-first"))]
        assert accepted[key]["user_data"] == checkout["user_data"]
    assert is_fully_committed(kafka, "also", topics.all)


def test_pipeline_partial_failures_dead_letter_only_failed_events_and_replay(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    traffic = produce_traffic(kafka, registry.url, topics, 600, seed=5, duplicate_ratio=0)
    failing = sorted(traffic.expected_ids)[:7]
    sandbox.faults(fail_event_ids=[event_id for _, event_id in failing])
    consumer = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "partial", CAPI_DLQ_MAX_RUN="0"
    ).start()
    try:
        stats = consumer.wait_final(len(traffic.produced))
        assert stats["dead_lettered"] == 7
        assert is_fully_committed(kafka, "partial", topics.all)
        dead = read_all(kafka, topics.dead_letter, 7)
        assert len(dead) == 7
        for _, headers in dead:
            assert headers["capi.reason"] == b"pinterest.event_failed"
            assert headers["capi.error"] == b"Injected per-event failure."
            assert headers["capi.pinterest.request_id"]
        assert sandbox.accepted_ids() == traffic.expected_ids - set(failing)
        # The fix is live: replay the dead letters through the pipeline.
        sandbox.faults(fail_event_ids=[])
        replay = subprocess.run(
            [sys.executable, "-m", "consumer", "replay"],
            env={**consumer.env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["replayed"] == 7
        consumer.wait_for(lambda s: s["delivered"] >= stats["delivered"] + 7, 60, "replayed")
        assert sandbox.accepted_ids() == traffic.expected_ids
    finally:
        consumer.stop()


@pytest.mark.parametrize("mode", ["CAPI_DRY_RUN", "CAPI_TEST_MODE"])
def test_dry_run_and_test_mode_never_move_a_real_groups_offsets(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
    mode: str,
) -> None:
    first = produce_traffic(kafka, registry.url, topics, 300, seed=31)
    consumer = ConsumerProcess(tmp_path, kafka, topics, registry.url, sandbox.url, "real")
    try:
        consumer.start().wait_final(len(first.produced))
        assert consumer.terminate() == 0
    finally:
        consumer.stop()
    before = committed_offsets(kafka, "real", topics.all)
    second = produce_traffic(kafka, registry.url, topics, 300, seed=32)
    trial = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "real", **{mode: "true"}
    )
    try:
        trial.start()
        trial.wait_for(
            lambda s: s["consumed"] >= len(second.produced) and s["unfinished_offsets"] == 0,
            what="every new record handled",
        )
        assert trial.terminate() == 0  # the final commit of a shutdown is skipped too
    finally:
        trial.stop()
    assert committed_offsets(kafka, "real", topics.all) == before
    assert "are read, never committed" in trial.log


@pytest.mark.parametrize("mode", ["CAPI_DRY_RUN", "CAPI_TEST_MODE"])
def test_a_trial_run_then_production_on_one_redis_and_group_sends_every_event(
    kafka: KafkaBroker,
    registry: SchemaRegistry,
    sandbox: SandboxProcess,
    topics: Topics,
    tmp_path: Path,
    redis_server: RedisServer,
    mode: str,
) -> None:
    """Issue 24 part 5: a trial run started with the deployment's environment (shared Redis,
    the real group) leaves no dedup keys, offsets or dead letters behind for production."""
    traffic = produce_traffic(kafka, registry.url, topics, 400, seed=41, poison=POISON)
    # Both parameters produce seed 41: an emptied database of its own, or production would
    # rightly take the other run's deliveries for duplicates.
    shared = {
        "CAPI_DEDUP_BACKEND": "redis",
        "CAPI_REDIS_URL": redis_database(topics, redis_server.url),
    }
    trial = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "prod", **shared, **{mode: "true"}
    )
    try:
        trial.start().wait_for(
            lambda s: s["consumed"] >= len(traffic.produced) and s["unfinished_offsets"] == 0,
            what="every record handled by the trial run",
        )
        assert trial.terminate() == 0
    finally:
        trial.stop()
    assert "trial run: dead letter not written" in trial.log
    assert read_all(kafka, topics.dead_letter, 1, timeout_s=3) == []
    sandbox.reset()  # test mode's requests were validated only; start the count from zero
    production = ConsumerProcess(
        tmp_path, kafka, topics, registry.url, sandbox.url, "prod", **shared
    )
    try:
        stats = production.start().wait_final(len(traffic.produced))
        assert production.terminate() == 0
    finally:
        production.stop()
    accepted = {(e["ad_account_id"], e["event"]["event_id"]) for e in sandbox.events()}
    assert accepted == traffic.expected_ids  # nothing skipped as a duplicate of the trial
    assert stats["dead_lettered"] == len(POISON)
    assert is_fully_committed(kafka, "prod", topics.all)
