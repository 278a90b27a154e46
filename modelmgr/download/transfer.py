"""One attempt at one part: a ranged GET streamed into the partial file with positional writes.

The reply is checked before a byte is written: a ranged request needs ``206`` with a
``Content-Range`` that starts exactly where we asked and has the file's total size, and the ETag
must be the pinned one. A ``200`` means the server ignored Range; that is reported so the engine
can fall back to a single stream. The segment's ``end`` may shrink while we read (another
connection stole the tail); we then stop at the new end. Every failure is turned into a
``PartFailure`` with a verdict from the retry table.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp

from ..errors import DiskSpaceError, ModelMgrError, RemoteChangedError
from .http import normalize_etag, parse_content_range
from .plan import Segment
from .ratelimit import RateLimiter
from .retry import PartFailure, Verdict, status_failure

WRITE_BLOCK = 1024 * 1024
_IOV_MAX = 512


@dataclass
class PartTarget:
    """What every part of one file shares: where to read from and where to write to."""

    session: aiohttp.ClientSession
    url: str
    headers: dict[str, str]
    at_origin: bool
    size: int | None
    etag: str | None
    fd: int
    limiter: RateLimiter
    on_written: Callable[[int], None]


def _write_all(fd: int, chunks: list[bytes], offset: int) -> int:
    """``pwritev`` the chunks at ``offset`` completely; returns bytes written."""
    total = sum(len(c) for c in chunks)
    written = 0
    views = [memoryview(c) for c in chunks]
    while written < total:
        n = os.pwritev(fd, views[:_IOV_MAX], offset + written)
        written += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n and views:
            views[0] = views[0][n:]
    return written


def _check_reply(resp: aiohttp.ClientResponse, seg: Segment, target: PartTarget,
                 ranged: bool) -> int:
    """Validate status, Content-Range and ETag; return the offset the body starts at."""
    got_etag = normalize_etag(resp.headers.get("ETag"))
    if target.etag and got_etag and got_etag != target.etag:
        raise RemoteChangedError(
            f"the remote file changed during the download (ETag {target.etag} -> {got_etag})",
            "pull again to start over with the new file")
    if resp.status == 206:
        cr = parse_content_range(resp.headers.get("Content-Range"))
        if cr is None or cr.first != seg.position or (
                target.size is not None and cr.total is not None and cr.total != target.size):
            raise PartFailure(Verdict.BACKOFF,
                              f"bad Content-Range {resp.headers.get('Content-Range')!r} for "
                              f"bytes={seg.position}-", status=206)
        return cr.first
    if resp.status == 200:
        if ranged and seg.position > 0:
            raise PartFailure(Verdict.SINGLE, "server ignored Range (HTTP 200)", status=200)
        return 0
    raise status_failure(resp.status, resp.headers, at_origin=target.at_origin)


@dataclass(frozen=True)
class PartStats:
    """Timing of one successful request, for sizing the next chunks."""

    latency: float
    """Seconds from sending the request to having the reply headers (about one round trip)."""
    rate: float
    """Body bytes per second on this connection."""


async def fetch_part(target: PartTarget, seg: Segment, *, ranged: bool = True) -> PartStats:
    """Fetch ``seg`` from its current position to its (possibly shrinking) end.

    Returns when the segment is complete or the server's reply ended early (the caller simply
    asks again for the rest). With ``ranged=False`` (single-stream fallback) a plain GET is sent
    and the bytes before ``seg.position`` are read and discarded.
    """
    headers = dict(target.headers)
    if ranged:
        last = "" if target.size is None else str(seg.end - 1)
        headers["Range"] = f"bytes={seg.position}-{last}"
    try:
        sent = time.monotonic()
        async with target.session.get(target.url, headers=headers, allow_redirects=False) as resp:
            body_offset = _check_reply(resp, seg, target, ranged)
            started, before = time.monotonic(), seg.filled
            await _stream_body(resp, seg, target, body_offset)
            elapsed = time.monotonic() - started
            return PartStats(started - sent, (seg.filled - before) / elapsed if elapsed > 0 else 0.0)
    except (PartFailure, ModelMgrError, asyncio.CancelledError):
        raise
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise PartFailure(Verdict.FREE, f"stalled: no data for a while ({type(exc).__name__})")
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise PartFailure(Verdict.BACKOFF, f"connection problem: {type(exc).__name__}: {exc}")


async def _stream_body(resp: aiohttp.ClientResponse, seg: Segment, target: PartTarget,
                       body_offset: int) -> None:
    """Copy the body into the file from ``body_offset``, skipping bytes before the segment."""
    skip = seg.position - body_offset
    pending: list[bytes] = []
    pending_len = 0
    content = resp.content
    while not seg.done:
        chunk = await content.readany()
        if not chunk:
            break
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        room = seg.end - (seg.position + pending_len)
        if room <= 0:  # the tail was stolen while we buffered
            break
        if len(chunk) > room:
            chunk = chunk[:room]
        pending.append(chunk)
        pending_len += len(chunk)
        if pending_len >= WRITE_BLOCK or pending_len >= seg.end - seg.position:
            _flush(pending, pending_len, seg, target)
            await target.limiter.take(pending_len)
            pending, pending_len = [], 0
    if pending:
        _flush(pending, pending_len, seg, target)


def _flush(chunks: list[bytes], length: int, seg: Segment, target: PartTarget) -> None:
    """Write buffered chunks at the segment position, then account for them."""
    if seg.position + length > seg.end:  # the tail was stolen while we buffered
        keep = seg.end - seg.position
        trimmed, total = [], 0
        for c in chunks:
            if total >= keep:
                break
            trimmed.append(c[: keep - total])
            total += len(trimmed[-1])
        chunks, length = trimmed, total
    if length <= 0:
        return
    try:
        _write_all(target.fd, chunks, seg.position)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(
                "the disk filled up during the download; the partial file is kept",
                "free some space and run the same command again to resume") from None
        raise
    seg.filled += length
    target.on_written(length)
