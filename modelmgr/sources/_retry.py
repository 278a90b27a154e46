"""Retrying metadata calls: one loop for every source, on the engine's retry rules.

Resolving a bundle makes a handful of API calls; one 503 or a brief 429 should not fail a pull.
Which statuses are retried, how a server's ``Retry-After``/``RateLimit`` is read and how backoff
grows are the download engine's (``modelmgr.download.retry``), with the same settings
(``MODELMGR_MAX_RETRIES``/``_RETRY_BASE``/``_RETRY_CAP``). One difference: a metadata call whose
server asks for a longer wait than ``retry_cap`` (Hugging Face's ``RateLimit: "api";r=0;t=55``)
fails at once with that wait in the message, instead of a silent multi-minute sleep before the
first byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..download.retry import RETRY_STATUSES, Backoff, server_delay
from ..errors import ModelMgrError
from ..settings import Settings

T = TypeVar("T")


class Retryable(Exception):
    """An attempt failed in a way worth repeating; ``final`` is raised when attempts run out."""

    def __init__(self, final: ModelMgrError, wait: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.wait = wait


async def retrying(settings: Settings, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until it succeeds, raises a non-retryable error, or attempts run out."""
    tries = max(settings.max_retries, 1)
    backoff = Backoff(settings.retry_base, settings.retry_cap)
    for n in range(1, tries + 1):
        try:
            return await attempt()
        except Retryable as exc:
            if n >= tries or (exc.wait is not None and exc.wait > settings.retry_cap):
                raise exc.final from None
            await asyncio.sleep(backoff.delay(n, exc.wait))
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["RETRY_STATUSES", "Retryable", "retrying", "server_delay"]
