"""Command line: `consumer run | check-config | transform | replay | sandbox | status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.errors import CommandError, ConfigError

_DIST = "capi-consumer"


def _run(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.engine.pipeline import Pipeline
    from consumer.observability.logs import setup_logging
    from consumer.tools.kafka_probe import check_kafka_settings

    env = dict(os.environ)
    if args.dry_run:
        env["CAPI_DRY_RUN"] = "true"
    config = load_config(env)
    check_kafka_settings(config)
    setup_logging(config.log_level)

    async def main() -> None:
        pipeline = Pipeline(config)
        # Events are short-lived acyclic dicts; the default gen-0 threshold (700) ran the
        # cyclic collector every few events and cost ~40% of normalization time.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.stop.set)
        try:
            await pipeline.run()
        finally:
            pipeline.telemetry.shutdown()
            if pipeline.source.close_abandoned:
                # librdkafka's close still runs in a worker thread, which interpreter exit
                # would join without bound: leave now, with the status the run earned.
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1 if pipeline.crash is not None else 0)

    asyncio.run(main())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.conversion.hashing import hasher_in_use
    from consumer.stages.avroplan import decoder_in_use
    from consumer.tools.kafka_probe import check_kafka_settings

    config = load_config()
    check_kafka_settings(config)
    shown = {
        **config.masked(),
        "avro_decoder_in_use": decoder_in_use(config.avro_decoder),
        "user_data_hasher_in_use": hasher_in_use(config.user_data_hasher),
    }
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _transform(args: argparse.Namespace) -> int:
    from consumer.tools.transform import transform_lines

    try:
        source: IO[str] = sys.stdin if args.input in (None, "-") else open(args.input)  # noqa: SIM115
    except OSError as exc:
        raise CommandError(f"cannot read --input {args.input}: {exc.strerror}") from None
    with contextlib.closing(source) if source is not sys.stdin else contextlib.nullcontext():
        summary = transform_lines(
            Path(args.mapping), source, sys.stdout, now_s=args.now or int(time.time())
        )
    if args.summary:
        sys.stderr.write(summary + "\n")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from consumer.tools.sandbox import Sandbox, serve

    tokens: dict[str, set[str]] = {}
    for item in args.token or ["sandbox-token=*"]:
        token, _, accounts = item.partition("=")
        tokens[token] = set((accounts or "*").split(","))

    async def main() -> None:
        sandbox = Sandbox(tokens, is_strict=not args.fast, keep_events=args.keep_events)
        if args.faults:
            sandbox.faults.update(orjson.loads(args.faults))
        runner = await serve(sandbox, args.host, args.port)
        print(f"sandbox listening on http://{args.host}:{args.port}", flush=True)
        for token, accounts in tokens.items():
            scope = "every ad account" if "*" in accounts else ", ".join(sorted(accounts))
            print(f"  accepts Bearer {token} for {scope}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    return 0


def _require_topics(kafka: dict[str, Any], topics: list[str]) -> None:
    """Fail with one line, before reading anything, when Kafka or a named topic is missing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**kafka, "log_level": 0})
    try:
        known = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise CommandError(f"cannot reach Kafka at {kafka['bootstrap.servers']}: {exc}") from None
    missing = [t for t in topics if t not in known]
    if missing:
        raise CommandError(f"no such topic: {', '.join(missing)}")


def _replay(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.tools.kafka_probe import check_kafka_settings
    from consumer.tools.progress import Progress
    from consumer.tools.replay import ReplayStats, replay_dead_letters

    config = load_config()
    check_kafka_settings(config)
    dead_letter_topic = args.from_dlq or config.dlq_topic
    _require_topics(
        config.kafka_client_config(), [dead_letter_topic, *filter(None, [args.to_topic])]
    )
    bar: Progress | None = None

    def progress(stats: ReplayStats, total: int) -> None:
        nonlocal bar
        bar = bar or Progress("replay", total)
        bar.update(stats.read, is_final=stats.read >= total)

    stats = replay_dead_letters(
        config.kafka_client_config(),
        dead_letter_topic,
        args.group,
        set(args.reason) if args.reason else None,
        args.to_topic,
        progress,
    )
    sys.stdout.write(
        orjson.dumps(
            {"read": stats.read, "replayed": stats.replayed, "skipped": stats.skipped}
        ).decode()
        + "\n"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from consumer.tools.status import collect, render

    try:
        status = collect(args.url, args.interval)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", None) or exc
        raise CommandError(
            f"no consumer health server answering at {args.url} ({reason}); "
            "is it running, and is --url its CAPI_HEALTH_PORT?"
        ) from None
    if args.json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(status) + "\n")
    return 0 if status["ready"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consumer",
        description="Kafka → Pinterest Conversions API consumer. Exit codes: 0 done, 1 not ready "
        "(status), 2 configuration or usage error, 3 a command could not do its job.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version(_DIST)}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="consume, map, deliver (configured by CAPI_* variables)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print request bodies, send nothing, commit no offsets (as CAPI_TEST_MODE, which "
        "sends with test=true, also commits none); `run` alone commits what it delivered",
    )
    run.set_defaults(func=_run)
    check = commands.add_parser("check-config", help="validate and print the effective config")
    check.set_defaults(func=_check_config)
    transform = commands.add_parser("transform", help="apply a mapping to JSON-lines records")
    transform.add_argument("--mapping", required=True)
    transform.add_argument("--input", default="-", help="JSON lines {topic, value}; - for stdin")
    transform.add_argument("--summary", action="store_true", help="print counts to stderr")
    transform.add_argument("--now", type=int, default=None, help="Unix seconds to use as 'now'")
    transform.set_defaults(func=_transform)
    sandbox = commands.add_parser("sandbox", help="run the local Pinterest API stand-in")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8089)
    sandbox.add_argument(
        "--token", action="append", help="TOKEN=ACCOUNT[,ACCOUNT] or TOKEN=* (repeatable)"
    )
    sandbox.add_argument("--faults", help='JSON, e.g. {"error_rate": 0.2, "latency_ms": 50}')
    sandbox.add_argument("--fast", action="store_true", help="skip validation (benchmarks)")
    sandbox.add_argument("--keep-events", type=int, default=200_000)
    sandbox.set_defaults(func=_sandbox)
    replay = commands.add_parser("replay", help="re-feed dead-lettered messages")
    replay.add_argument("--from-dlq", default=None, help="dead-letter topic (CAPI_DLQ_TOPIC)")
    replay.add_argument("--reason", action="append", help="only this reason (repeatable)")
    replay.add_argument("--to-topic", default=None, help="instead of each original topic")
    replay.add_argument("--group", default="capi-replay")
    replay.set_defaults(func=_replay)
    status = commands.add_parser("status", help="summarize a running instance")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="its health server")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: Any = args.func(args)
        return int(result)
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    except CommandError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    except KeyboardInterrupt:
        return 130
