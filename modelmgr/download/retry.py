"""The one retry decision table of the download engine.

Every failure of a part attempt is classified once, here:

====================================  ===========  =====================================
failure                               verdict      what happens
====================================  ===========  =====================================
cancelled (Ctrl-C), disk full         FINAL        stop the file, keep partial + state
auth / not found at the origin        FINAL        clear error, keep partial
no bytes for ``stall_timeout``        FREE         reconnect at once, not a failure
408 / 429 / 5xx                       BACKOFF      wait (Retry-After / RateLimit t=) then retry
connection reset, timeout, short body BACKOFF      exponential backoff with full jitter
401/403/404/410 from the CDN          REFRESH      re-resolve the signed URL, then retry
Range ignored (200)                   SINGLE       fall back to one stream from the prefix
bad Content-Range                     BACKOFF      nothing written; repeated → SINGLE
====================================  ===========  =====================================
"""

from __future__ import annotations

import email.utils
import enum
import random
import re
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Verdict(enum.Enum):
    FINAL = "final"
    FREE = "free"
    BACKOFF = "backoff"
    REFRESH = "refresh"
    SINGLE = "single"


class PartFailure(Exception):
    """A classified failure of one part attempt (internal to the engine)."""

    def __init__(self, verdict: Verdict, reason: str, delay: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason
        self.delay = delay
        self.status = status


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


_RATELIMIT_T = re.compile(r"(?:^|;)\s*t\s*=\s*(\d+)")
_RATELIMIT_R = re.compile(r"(?:^|;)\s*r\s*=\s*(\d+)")


def parse_ratelimit(value: str | None) -> float | None:
    """Seconds until the Hub's rate-limit window resets (``RateLimit: "api";r=0;t=55``), if exhausted."""
    if not value:
        return None
    remaining = _RATELIMIT_R.search(value)
    reset = _RATELIMIT_T.search(value)
    if reset and (remaining is None or int(remaining.group(1)) == 0):
        return float(reset.group(1))
    return None


def server_delay(headers) -> float | None:
    """The wait a server asked for, from Retry-After or the Hub's RateLimit header."""
    delays = [d for d in (parse_retry_after(headers.get("Retry-After")),
                          parse_ratelimit(headers.get("RateLimit"))) if d is not None]
    return max(delays) if delays else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; a server-requested delay wins (capped generously)."""

    base: float
    cap: float

    def delay(self, attempt: int, requested: float | None = None,
              rng: random.Random | None = None) -> float:
        if requested is not None:
            return min(requested, max(self.cap, 300.0))
        rng = rng or random
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return rng.uniform(ceiling / 2, ceiling)


def status_failure(status: int, headers, *, at_origin: bool) -> PartFailure:
    """Classify an unexpected HTTP status for a data request."""
    if status in RETRY_STATUSES:
        return PartFailure(Verdict.BACKOFF, f"HTTP {status}", server_delay(headers), status)
    if status in (401, 403, 404, 410) and not at_origin:
        return PartFailure(Verdict.REFRESH, f"HTTP {status} from the download host (link expired?)",
                           status=status)
    return PartFailure(Verdict.FINAL, f"HTTP {status}", status=status)
