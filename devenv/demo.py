"""`make demo`: real Kafka + schema registry + local Pinterest sandbox, sample events, the consumer.

Starts everything on loopback, produces a few thousand order and engagement events (some
duplicated, some poison), runs `consumer run` until every message has a final fate, prints a
summary, and stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from consumer.tools.progress import Progress
from devenv.kafka import KafkaBroker
from devenv.procs import ROOT, Server, free_port, get_json, port_open, wait_until
from devenv.produce import produce_samples
from devenv.registry import SchemaRegistry
from devenv.samples import ENGAGEMENT_TOPIC, ORDERS_TOPIC

TOKEN = "demo-token"


def main() -> int:
    count = int(os.environ.get("DEMO_EVENTS", "5000"))
    workdir = Path(tempfile.mkdtemp(prefix="capi-demo-"))
    started_services: list[Any] = []
    try:
        print("starting Kafka (KRaft) ...", flush=True)
        kafka = KafkaBroker(workdir / "kafka").start()
        started_services.append(kafka)
        print(f"  ready at {kafka.bootstrap} in {kafka.startup_s:.1f}s", flush=True)
        print("starting schema registry ...", flush=True)
        registry = SchemaRegistry(workdir / "registry").start()
        started_services.append(registry)
        print(f"  ready at {registry.url} in {registry.startup_s:.1f}s", flush=True)
        for topic in (ORDERS_TOPIC, ENGAGEMENT_TOPIC):
            kafka.create_topic(topic, partitions=4)
        kafka.create_topic("capi.dead-letter", partitions=1)
        python = sys.executable
        sandbox_port = free_port()
        sandbox = Server(
            "sandbox",
            [
                python,
                "-m",
                "consumer",
                "sandbox",
                "--port",
                str(sandbox_port),
                "--token",
                f"{TOKEN}=*",
            ],
            workdir / "sandbox.log",
        )
        started_services.append(sandbox)
        wait_until(lambda: port_open(sandbox_port), 20, "sandbox", sandbox.proc, sandbox.log)
        print(f"sandbox at http://127.0.0.1:{sandbox_port}", flush=True)
        print(f"producing {count} sample events (+3 poison messages) ...", flush=True)
        total = produce_samples(kafka.bootstrap, registry.url, count)
        health_port = free_port()
        env = {
            "CAPI_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "CAPI_KAFKA_GROUP_ID": "capi-demo",
            "CAPI_MAPPING_FILE": str(ROOT / "schemas" / "mapping.example.yaml"),
            "CAPI_SCHEMA_REGISTRY_URL": registry.url,
            "CAPI_READER_SCHEMA_DIR": str(ROOT / "schemas"),
            "CAPI_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
            "CAPI_ACCESS_TOKEN": TOKEN,
            "CAPI_HEALTH_HOST": "127.0.0.1",
            "CAPI_HEALTH_PORT": str(health_port),
            "CAPI_LINGER_MS": "100",
            # The sample poison carries a schema id no registry knows: a short hold for a demo.
            "CAPI_UNKNOWN_SCHEMA_RETRY_S": "3",
            "CAPI_LOG_LEVEL": "warning",
        }
        print("running the consumer ...", flush=True)
        consumer = Server(
            "consumer", [python, "-m", "consumer", "run"], workdir / "consumer.log", env=env
        )
        started_services.append(consumer)
        wait_until(lambda: port_open(health_port), 30, "consumer", consumer.proc, consumer.log)
        began = time.monotonic()
        first_consumed: float | None = None
        stats: dict[str, Any] = {}
        progress = Progress(
            "  records handled (delivered, deduplicated, skipped or dead-lettered)",
            total,
            stream=sys.stdout,
        )
        while time.monotonic() - began < 300:
            stats = get_json(f"http://127.0.0.1:{health_port}/stats")
            if stats["consumed"] and first_consumed is None:
                first_consumed = time.monotonic()
            done = sum(stats[k] for k in ("delivered", "deduplicated", "skipped", "dead_lettered"))
            if first_consumed is not None:
                progress.update(done)
            if done >= total and stats["unfinished_offsets"] == 0:
                progress.update(done, is_final=True)
                break
            if consumer.proc.poll() is not None:
                raise RuntimeError(f"consumer exited: {consumer.log.read_text()[-2000:]}")
            time.sleep(0.05)
        join_s = (first_consumed or began) - began
        elapsed = time.monotonic() - (first_consumed or began)
        from consumer.tools.status import collect, render

        print("\n\nconsumer status (what `consumer status` shows for a running instance)")
        print(render(collect(f"http://127.0.0.1:{health_port}", interval_s=0.5)))
        consumer.stop()
        sandbox_stats = get_json(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats")
        print("\n\ndelivery summary")
        print(f"  messages produced       {total}")
        print(f"  consumed                {stats.get('consumed')}")
        print(f"  delivered to Pinterest  {stats.get('delivered')}")
        print(f"  deduplicated            {stats.get('deduplicated')}")
        print(f"  skipped by mapping      {stats.get('skipped')}  (filters, consent, non-checkout)")
        print(f"  dead-lettered           {stats.get('dead_lettered')}")
        print(
            f"  sandbox accepted        {sandbox_stats['events_processed']} events in "
            f"{sandbox_stats['requests']} requests "
            f"({sandbox_stats['duplicates_received']} duplicates received)"
        )
        print(
            f"  throughput              {total / elapsed:,.0f} messages/s over {elapsed:.2f}s "
            f"(first consume to last commit; joining the group took {join_s:.1f}s)"
        )
        print(f"  exit code of consumer   {consumer.proc.returncode} (SIGTERM drain)")
        return 0 if consumer.proc.returncode == 0 else 1
    finally:
        kept = _keep_logs(workdir)
        for service in reversed(started_services):
            (service.cleanup if hasattr(service, "cleanup") else service.stop)()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"\nlogs kept in {kept.relative_to(ROOT)}/ (consumer, sandbox and Kafka logs)")
        print(NEXT_STEPS)


NEXT_STEPS = """
what to try next
  consumer transform --mapping schemas/mapping.example.yaml \\
      --input schemas/records.sample.jsonl --summary --now 1800000000
                                  what a mapping builds, leaves out and rejects, record by record
  consumer sandbox --port 8089    the Pinterest stand-in, to point CAPI_API_BASE_URL at
  make test                       the whole suite against real Kafka, registry and receivers
  README.md, "Configuration"      every CAPI_* setting; "Troubleshooting" when nothing flows"""


def _keep_logs(workdir: Path) -> Path:
    """Copy the run's logs to .cache/demo-logs/<time>/ before the servers' folders go."""
    kept = ROOT / ".cache" / "demo-logs" / time.strftime("%Y%m%d-%H%M%S")
    kept.mkdir(parents=True, exist_ok=True)
    for log in [*workdir.glob("*.log"), *workdir.glob("*/*.log")]:
        shutil.copy(
            log, kept / (log.name if log.parent == workdir else f"{log.parent.name}-{log.name}")
        )
    return kept


if __name__ == "__main__":
    sys.exit(main())
