"""Retrying metadata calls: one loop for every source, honouring what the server asks for.

Resolving a bundle makes a handful of API calls; one 503 or a brief 429 should not fail a pull.
Attempts, first delay and cap come from ``Settings`` (``MODELMGR_MAX_RETRIES``/``_RETRY_BASE``/
``_RETRY_CAP``), the same knobs the download engine uses. A server that asks for a longer wait
than the cap (Hugging Face's ``RateLimit: "api";r=0;t=55``) gets a clear error at once instead of
a silent multi-minute sleep.
"""

from __future__ import annotations

import asyncio
import random
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, Mapping, TypeVar

from ..errors import ModelMgrError
from ..settings import Settings

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth another attempt; any other 4xx is final."""

_RATELIMIT = re.compile(r'"\w+"\s*;\s*r\s*=\s*(\d+)\s*;\s*t\s*=\s*(\d+)')


def server_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: an exhausted IETF ``RateLimit`` header (Hugging
    Face) or ``Retry-After`` (seconds or an HTTP date); None when it did not say."""
    ratelimit = headers.get("RateLimit") or headers.get("ratelimit")
    if ratelimit:
        match = _RATELIMIT.search(ratelimit)
        if match and int(match.group(1)) == 0:
            return float(match.group(2))
    value = (headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def backoff_delay(settings: Settings, attempt: int, wait: float | None = None) -> float:
    """Delay before attempt ``attempt + 1``: the server's wait if given, else exponential
    backoff from ``retry_base`` capped at ``retry_cap``, with jitter so clients spread out."""
    if wait is not None:
        return wait
    return min(settings.retry_cap, settings.retry_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1)


class Retryable(Exception):
    """An attempt failed in a way worth repeating; ``final`` is raised when attempts run out."""

    def __init__(self, final: ModelMgrError, wait: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.wait = wait


async def retrying(settings: Settings, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until it succeeds, raises a non-retryable error, or attempts run out."""
    tries = max(settings.max_retries, 1)
    for n in range(1, tries + 1):
        try:
            return await attempt()
        except Retryable as exc:
            if n >= tries or (exc.wait is not None and exc.wait > settings.retry_cap):
                raise exc.final from None
            await asyncio.sleep(backoff_delay(settings, n, exc.wait))
    raise AssertionError("unreachable")  # pragma: no cover
