"""A token bucket per ad account: how long the next request must wait (pure, given a clock)."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Token bucket: `rate_per_s` requests per second with bursts up to `burst`."""

    def __init__(
        self, rate_per_s: float, burst: float, clock: Callable[[], float] | None = None
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._clock = clock = clock or time.monotonic  # read at construction (simulation)
        self._updated = clock()

    def delay_s(self) -> float:
        """Take a token; return how long to wait before using it (0 when one was there)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s
