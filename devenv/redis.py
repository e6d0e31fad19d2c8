"""A throwaway Redis server on loopback (Debian's redis-server), no persistence."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from devenv.procs import Server, free_port, port_open, wait_until


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.server: Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed (apt-get install redis-server)")
        self.server = Server(
            "redis",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            self.workdir / "redis.log",
        )
        wait_until(lambda: port_open(self.port), 20, "redis", self.server.proc, self.server.log)
        return self

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
