"""Stage micro-benchmarks: CPU time per event for each pure stage, in one process."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

import fastavro
import orjson
import yaml

from bench.floor import floor_us_per_event
from consumer.conversion.capi import validate_event
from consumer.conversion.hashing import UserDataHasher
from consumer.conversion.mapping import Mapper
from consumer.conversion.normalize import normalize_conversion
from consumer.conversion.quality import MatchQuality
from consumer.conversion.rules import compile_mapping
from consumer.engine.process import CHECK_EVERY_IN_RUN, RecordProcessor, hasher_for
from consumer.records import Conversion, Coordinates, Decoded, Envelope
from consumer.stages.batcher import Batcher, BatchSettings
from consumer.stages.decode import Decoder
from consumer.stages.dedup import DedupKey, MemoryDedupStore, fingerprint
from devenv.samples import SCHEMAS, load_schema, new_customer, order_record, wire_encode

ORDER = "com.example.shop.orders.OrderEvent"


def per_event_us(work: Callable[[], int]) -> float:
    """CPU microseconds per item of `work`, which returns how many items it did."""
    started = time.process_time()
    items = work()
    return (time.process_time() - started) * 1e6 / max(1, items)


def sample_envelopes(count: int, new_customers: bool = False) -> list[Envelope]:
    """Sample orders: the sample's repeat customers, or each from a customer never seen."""
    rng = random.Random(4)
    schema = load_schema("order_event.v1.avsc")
    now_ms = int(time.time() * 1000)
    envelopes = []
    for n in range(count):
        record = order_record(rng, n, now_ms)
        record.update(event_type="ORDER_PLACED", is_test=False)
        record["consent"]["ads_personalization"] = True
        if new_customers:
            record = new_customer(record, rng, n)
        envelopes.append(
            Envelope(Coordinates("shop.orders", 0, n), value=wire_encode(1, schema, record))
        )
    return envelopes


def run_micro(
    count: int = 20_000, dedup_sizes: tuple[int, ...] = (1_000_000, 10_000_000)
) -> dict[str, Any]:
    """CPU µs per event for each stage on the same sample orders, and the Python floor."""
    gc.freeze()  # the same collector settings as `consumer run`
    gc.set_threshold(50_000, 20, 20)
    envelopes = sample_envelopes(count)
    writer = load_schema("order_event.v1.avsc")
    mapping = compile_mapping(yaml.safe_load((SCHEMAS / "mapping.example.yaml").read_text()))
    now_s = int(time.time())
    results: dict[str, Any] = {"events": count}
    results["floor_us"] = floor_us_per_event([e.value for e in envelopes], writer)
    decoder = Decoder(None, {}, {})
    decoder.add_writer_schema(1, writer)
    decoded: list[Decoded] = []
    results["decode_us"] = per_event_us(
        lambda: len([decoded.append(decoder.decode(e)) for e in envelopes])
    )
    # The same records through fastavro alone: what decode costs without the compiled decoder.
    parsed = fastavro.parse_schema(writer)
    results["decode_fastavro_us"] = per_event_us(
        lambda: len([fastavro.schemaless_reader(BytesIO(e.value[5:]), parsed) for e in envelopes])
    )
    mapper = Mapper(mapping)
    mapped: list[Conversion] = []

    def map_all() -> int:
        mapped.clear()
        for item in decoded:
            conversion = mapper.map(item, now_s)
            assert isinstance(conversion, Conversion)
            mapped.append(conversion)
        return len(decoded)

    results["map_us"] = per_event_us(map_all)
    conversions: list[Conversion] = []

    def fresh_mapped() -> list[Conversion]:
        """Copies of the mapped events: normalize hashes its record in place."""
        return [
            dataclasses.replace(c, event={**c.event, "user_data": dict(c.event["user_data"])})
            for c in mapped
        ]

    def normalize_all(hasher: UserDataHasher, todo: list[Conversion]) -> int:
        conversions.clear()
        conversions.extend(normalize_conversion(c, hasher) for c in todo)
        return len(todo)

    # The compiled user_data rules where installed (CAPI_USER_DATA_HASHER), and Python's.
    results["user_data_hasher"] = hasher_for(mapping).implementation
    warm: dict[str | None, UserDataHasher] = {}
    for mode, suffix in (("python", "_python"), (None, "")):
        todo = fresh_mapped()
        results[f"normalize_hash{suffix}_uncached_us"] = per_event_us(
            lambda mode=mode, todo=todo: normalize_all(
                hasher_for(mapping, cache_size=0, mode=mode), todo
            )
        )
        warm[mode] = hasher_for(mapping, mode=mode)
        # The digest cache warm, as a long-running consumer has it.
        normalize_all(warm[mode], fresh_mapped())
        todo = fresh_mapped()
        results[f"normalize_hash{suffix}_cached_us"] = per_event_us(
            lambda h=warm[mode], todo=todo: normalize_all(h, todo)
        )
    cached = warm[None]  # the last warmed: `conversions` now holds what it normalized
    results["full_check_us"] = per_event_us(
        lambda: len([validate_event(c.event, now_s) for c in conversions])
    )
    # What `consumer run` spends per record before dedup: decode, map, normalize, sampled check.
    processor = RecordProcessor(mapping, decoder, check_every=CHECK_EVERY_IN_RUN, hasher=cached)
    results["process_us"] = per_event_us(
        lambda: len([processor.build(e, now_s) for e in envelopes])
    )
    # The same on orders of customers never seen before (`devenv.samples.new_customer`).
    new = sample_envelopes(count, new_customers=True)
    for mode, suffix in ((None, ""), ("python", "_python")):
        fresh = RecordProcessor(
            mapping,
            decoder,
            check_every=CHECK_EVERY_IN_RUN,
            hasher=hasher_for(mapping, mode=mode),
        )
        results[f"process_new_customers{suffix}_us"] = per_event_us(
            lambda p=fresh: len([p.build(e, now_s) for e in new])
        )
    results["encode_us"] = per_event_us(lambda: len([orjson.dumps(c.event) for c in conversions]))
    quality = MatchQuality()
    results["match_quality_us"] = per_event_us(
        lambda: len(
            [quality.observe(c.ad_account, c.event_name, c.event["user_data"]) for c in conversions]
        )
    )
    results["event_bytes"] = sum(len(orjson.dumps(c.event)) for c in conversions) / count
    # Last: the batcher takes each event's bytes and empties its dict.
    batcher = Batcher(lambda batch: None, BatchSettings(high_watermark=10**9, low_watermark=0))
    results["batch_assembly_us"] = per_event_us(
        lambda: len([batcher.submit(c) for c in conversions])
    )
    results["process_to_floor"] = round(results["process_us"] / results["floor_us"], 2)
    results["avro_bytes"] = sum(len(e.value) for e in envelopes) / count
    for size in dedup_sizes:
        results[f"dedup_{size}"] = bench_dedup(size)
    # A consumer that has run for the whole 48 h window probes every bucket on each new event.
    results[f"dedup_{dedup_sizes[0]}_over_48h"] = bench_dedup(dedup_sizes[0], spread_s=48 * 3600)
    return results


def bench_dedup(size: int, spread_s: int = 3600) -> dict[str, float]:
    store = MemoryDedupStore(window_s=48 * 3600, max_keys=size * 2)
    now = int(time.time())
    keys = [
        DedupKey(fingerprint("549755885175", "checkout", f"ord-{i}"), now - (i % spread_s))
        for i in range(size)
    ]

    # As delivery confirms them: a request's keys at a time.
    async def fill() -> None:
        for at in range(0, size, 1000):
            await store.confirm_many(keys[at : at + 1000])

    started = time.process_time()
    asyncio.run(fill())
    fill_s = time.process_time() - started
    probes = [
        DedupKey(fingerprint("549755885175", "checkout", f"ord-{i}"), now)
        for i in random.Random(1).sample(range(size * 2), 200_000)
    ]

    async def probe() -> None:  # as admission asks: a chunk's keys at a time
        for at in range(0, len(probes), 1000):
            chunk = probes[at : at + 1000]
            claims = await store.claim_many(chunk)
            store.release_many(
                [k for k, is_claimed in zip(chunk, claims, strict=True) if is_claimed]
            )

    started = time.process_time()
    asyncio.run(probe())
    lookup_s = time.process_time() - started
    return {
        "keys": len(store),
        "bytes_per_key": store.nbytes / len(store),
        "insert_us": fill_s * 1e6 / size,
        "lookups_per_s": len(probes) / lookup_s,
    }


if __name__ == "__main__":
    print(orjson.dumps(run_micro(5000, (100_000,)), option=orjson.OPT_INDENT_2).decode())
