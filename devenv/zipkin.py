"""A real trace backend on loopback: Zipkin server (in-memory storage) from Maven Central."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from devenv.procs import CACHE, Server, free_port, wait_until

VERSION = "3.6.1"
JAR = CACHE / f"zipkin-server-{VERSION}-exec.jar"


def fetch_zipkin() -> Path:
    if JAR.exists():
        return JAR
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            f"-Dartifact=io.zipkin:zipkin-server:{VERSION}:jar:exec",
            f"-DoutputDirectory={CACHE}",
        ],
        check=True,
    )
    return JAR


class ZipkinServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="zipkin-"))
        self.server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spans_endpoint(self) -> str:
        return f"{self.url}/api/v2/spans"

    def is_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            return bool(response.status == 200)

    def start(self, timeout_s: float = 90) -> ZipkinServer:
        jar = fetch_zipkin()
        java = shutil.which("java") or "java"
        self.server = Server(
            "zipkin",
            [
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                f"-Darmeria.ports[0].port={self.port}",
                "-Darmeria.ports[0].ip=127.0.0.1",
                "-Darmeria.ports[0].protocols=http",
                "-jar",
                str(jar),
            ],
            self.workdir / "zipkin.log",
            env={"STORAGE_TYPE": "mem"},
        )
        wait_until(self.is_ready, timeout_s, "zipkin", self.server.proc, self.server.log)
        return self

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
