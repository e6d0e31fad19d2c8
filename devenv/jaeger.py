"""A real OTLP receiver on loopback: Jaeger v2 (in-memory storage), built from the Go module proxy.

`devenv/jaeger/go.mod` pins the version as a Go tool; the binary is cached in .kafka/. Every
listener binds 127.0.0.1 on a free port. Traces are read back through Jaeger's query API.

python -m devenv.jaeger    # start one and print its OTLP endpoint (Ctrl-C stops it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devenv.procs import (
    CACHE,
    ROOT,
    Server,
    free_port,
    get_json,
    serve_until_interrupted,
    wait_until,
)

MODULE_DIR = ROOT / "devenv" / "jaeger"
VERSION = "v1.75.0"  # the Go module's tag of the Jaeger v2 binary
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
BINARY = CACHE / f"jaeger-{VERSION}"

_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def fetch_jaeger() -> Path:
    """Build the pinned Jaeger binary once (about two minutes on two cores) into .kafka/."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed: it builds the Jaeger OTLP receiver for tests")
    CACHE.mkdir(exist_ok=True)
    partial = BINARY.with_suffix(".partial")
    subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), f"{PACKAGE}"],
        cwd=MODULE_DIR,
        check=True,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    partial.rename(BINARY)
    return BINARY


class JaegerServer:
    def __init__(self) -> None:
        self.otlp_port = free_port()
        self.query_port = free_port()
        self.query_grpc_port = free_port()
        self.health_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="jaeger-"))
        self.server: Server | None = None

    @property
    def otlp_endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT takes: the exporter appends /v1/traces."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def is_ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/status", timeout=2):
            return True

    def start(self, timeout_s: float = 60) -> JaegerServer:
        binary = fetch_jaeger()
        config = self.workdir / "config.yaml"
        config.write_text(
            _CONFIG.format(
                otlp_port=self.otlp_port,
                query_port=self.query_port,
                query_grpc_port=self.query_grpc_port,
                health_port=self.health_port,
            )
        )
        self.server = Server(
            "jaeger", [str(binary), "--config", str(config)], self.workdir / "jaeger.log"
        )
        wait_until(self.is_ready, timeout_s, "jaeger", self.server.proc, self.server.log)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def restart(self, timeout_s: float = 60) -> None:
        """Start again on the same ports (stored traces are gone: storage is in memory)."""
        self.stop()
        self.start(timeout_s)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans Jaeger stored for one trace (hex id), [] when it has none yet. Each span
        carries its `process` (service name and resource attributes as tags)."""
        try:
            answer = get_json(f"{self.query_url}/api/traces/{trace_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise
        return [
            {**span, "process": trace["processes"][span["processID"]]}
            for trace in answer.get("data") or []
            for span in trace["spans"]
        ]

    def services(self) -> list[str]:
        return list(get_json(f"{self.query_url}/api/services").get("data") or [])

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    jaeger = JaegerServer().start()
    sys.exit(
        serve_until_interrupted(
            f"OTLP/HTTP at {jaeger.otlp_endpoint}, query UI at {jaeger.query_url}",
            jaeger.cleanup,
        )
    )
