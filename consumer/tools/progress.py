"""Progress for long runs: a live line on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, label: str, total: int | None, stream: TextIO = sys.stderr, every_s: float = 2.0
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.is_tty = stream.isatty()
        self.every_s = 0.2 if self.is_tty else every_s
        self.started = time.monotonic()
        self._last = 0.0

    def line(self, done: int) -> str:
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = done / elapsed
        text = f"{self.label}: {done}"
        if self.total:
            remaining = max(0, self.total - done)
            eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
            text += f"/{self.total} ({100 * done / self.total:.0f}%), eta {eta}"
        return f"{text}, {rate:,.0f}/s"

    def update(self, done: int, is_final: bool = False) -> None:
        now = time.monotonic()
        if not is_final and now - self._last < self.every_s:
            return
        self._last = now
        if self.is_tty:
            self.stream.write("\r" + self.line(done) + ("\n" if is_final else ""))
        else:
            self.stream.write(self.line(done) + "\n")
        self.stream.flush()
