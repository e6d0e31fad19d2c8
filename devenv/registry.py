"""A real schema registry speaking the Confluent REST API: Apicurio Registry, in-memory storage.

Apicurio 2.6 runs on the Java 17 that this project already needs for Kafka (3.x wants Java 21).
Its Confluent-compatible API lives under /apis/ccompat/v7.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from devenv.procs import CACHE, Server, free_port, serve_until_interrupted, wait_until

VERSION = "2.6.13.Final"
HOME = CACHE / f"apicurio-{VERSION}"


def fetch_registry() -> Path:
    runner = HOME / f"apicurio-registry-app-{VERSION}-runner.jar"
    if runner.exists():
        return runner
    download = Path(tempfile.mkdtemp(prefix="apicurio-"))
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            f"-Dartifact=io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all",
            f"-DoutputDirectory={download}",
        ],
        check=True,
    )
    unpacked = Path(tempfile.mkdtemp(prefix="apicurio-", dir=CACHE))
    with tarfile.open(next(download.glob("*.tar.gz"))) as archive:
        archive.extractall(unpacked, filter="data")
    shutil.rmtree(download, ignore_errors=True)
    shutil.rmtree(HOME, ignore_errors=True)
    unpacked.rename(HOME)
    return runner


class SchemaRegistry:
    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.management_port = free_port()
        self.server: Server | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        """The base URL to give confluent-kafka's SchemaRegistryClient."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def is_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
            return bool(response.status == 200)

    def start(self, timeout_s: float = 90.0) -> SchemaRegistry:
        runner = fetch_registry()
        started = time.monotonic()
        java = shutil.which("java") or "java"
        self.server = Server(
            "schema-registry",
            [
                java,
                "-Xmx384m",
                "-XX:TieredStopAtLevel=1",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self.port}",
                "-Dquarkus.management.host=127.0.0.1",
                f"-Dquarkus.management.port={self.management_port}",
                "-Dquarkus.log.level=WARN",
                "-jar",
                str(runner),
            ],
            log=self.workdir / "registry.log",
            cwd=runner.parent,
        )
        wait_until(self.is_ready, timeout_s, "schema registry", self.server.proc, self.server.log)
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    registry = SchemaRegistry().start()
    sys.exit(
        serve_until_interrupted(
            f"schema registry at {registry.url} in {registry.startup_s:.1f}s", registry.cleanup
        )
    )
