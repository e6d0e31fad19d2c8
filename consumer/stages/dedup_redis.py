"""Redis-backed dedup store shared by every replica of a Deployment.

Only delivered keys live in Redis (SET with a TTL equal to what is left of the window); in-flight
claims stay in the process that owns the partition. A process that dies mid-delivery therefore
leaves no claim behind that would make its replacement drop the redelivered event.

Keys name the account, event name and event id (`dedup.fingerprint`); versions before wrote
account and event id only. Until one dedup window has passed since the upgrade, a claim also
reads that legacy key (`reads_legacy_keys`, CAPI_DEDUP_READ_LEGACY_KEYS), so nothing delivered
before the upgrade is sent again; only new keys are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consumer.errors import TransientError
from consumer.stages.dedup import DedupKey, Fingerprint, legacy_fingerprint


class RedisDedupStore:
    def __init__(
        self,
        url: str,
        window_s: int = 48 * 3600,
        prefix: str = "capi:dedup:",
        wall_clock: Callable[[], float] = time.time,
        reads_legacy_keys: bool = True,
    ) -> None:
        self.reads_legacy_keys = reads_legacy_keys
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.window_s = window_s
        self.prefix = prefix
        self._wall_clock = wall_clock
        self._in_flight: set[Fingerprint] = set()

    def _key(self, fp: Fingerprint) -> str:
        return f"{self.prefix}{fp:016x}"

    async def claim_many(self, keys: Sequence[DedupKey]) -> list[bool]:
        if not keys:
            return []
        names = [self._key(k.fingerprint) for k in keys]
        if self.reads_legacy_keys:
            names += [self._key(legacy_fingerprint(k.ad_account, k.event_id)) for k in keys]
        try:
            found = await self._redis.mget(names)
        except RedisError as exc:
            raise TransientError(f"redis unavailable: {type(exc).__name__}") from None
        seen = found[: len(keys)]
        if self.reads_legacy_keys:
            seen = [new or old for new, old in zip(seen, found[len(keys) :], strict=True)]
        results = []
        for key, value in zip(keys, seen, strict=True):
            is_new = value is None and key.fingerprint not in self._in_flight
            if is_new:
                self._in_flight.add(key.fingerprint)
            results.append(is_new)
        return results

    async def confirm_many(self, keys: Sequence[DedupKey]) -> None:
        now = self._wall_clock()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    self._in_flight.discard(key.fingerprint)
                    ttl_s = int(key.event_time_s + self.window_s - now)
                    if ttl_s > 0:
                        pipe.set(self._key(key.fingerprint), b"1", ex=ttl_s)
                await pipe.execute()
        except RedisError:
            # Delivery already happened; a lost "seen" mark only risks one re-send.
            return

    def release_many(self, keys: Sequence[DedupKey]) -> None:
        for key in keys:
            self._in_flight.discard(key.fingerprint)

    async def close(self) -> None:
        await self._redis.aclose()
