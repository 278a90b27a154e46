"""``--limit-rate``: one token bucket shared by every connection of a pull."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Token bucket; ``take(n)`` waits until ``n`` bytes fit under the rate (0 = unlimited).

    The bucket holds at most one second of traffic, so after an idle spell a burst is short.
    """

    def __init__(self, rate: int) -> None:
        self.rate = max(0, int(rate))
        self._tokens = float(self.rate)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)
