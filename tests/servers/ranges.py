"""``RangeServer``: a plain HTTP range server shaped like a CDN or S3, with fault injection.

The download engine must check range replies instead of trusting them (DESIGN.md), so this server
can misbehave on purpose: ignore ``Range``, shift ``Content-Range``, reset or stall a connection
mid-body, promise more bytes than it sends, answer 429/5xx with ``Retry-After``. It also behaves
like the hosts modelmgr really meets: per-connection bandwidth caps (why parallel ranges help),
presigned URLs that expire, and S3's refusal of a second auth mechanism (why a token must never
follow a redirect to storage).

When no fault or cap applies, bodies go out through ``loop.sendfile`` (files) or 1 MiB writes
(bytes), so a benchmark pulling gigabytes over loopback measures the client, not this server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .base import RECORD, LoopbackServer, RequestRecord

MiB = 1024 * 1024
_FAST_CHUNK = MiB
_PACED_CHUNK = 64 * 1024
_SENDFILE_SLICE = 16 * MiB
_BASE_TIME = 1_700_000_000  # Last-Modified of generation 0, a fixed date keeps tests deterministic


# -- entities ----------------------------------------------------------------------------------


class Blob:
    """Bytes in memory or a file on disk, read by offset."""

    def __init__(self, data: bytes | bytearray | memoryview | str | Path) -> None:
        if isinstance(data, (str, Path)):
            self.path: Path | None = Path(data)
            self._data: bytes | None = None
            self.size = self.path.stat().st_size
        else:
            self.path = None
            self._data = bytes(data)
            self.size = len(self._data)

    def open(self) -> Any:
        """A handle for ``read`` (an open file for on-disk blobs, else None)."""
        return open(self.path, "rb") if self.path is not None else None

    def read(self, handle: Any, offset: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``offset``."""
        if self._data is not None:
            return memoryview(self._data)[offset:offset + n]
        return os.pread(handle.fileno(), n, offset)

    def chunks(self, size: int = 8 * MiB) -> Iterator[bytes | memoryview]:
        """The whole content, in order, ``size`` bytes at a time."""
        handle = self.open()
        try:
            for offset in range(0, self.size, size):
                yield self.read(handle, offset, size)
        finally:
            if handle is not None:
                handle.close()

    def digest(self, name: str) -> str:
        """Hex digest (``sha256``, ``sha1``, ``md5``, ``blake3``) of the content."""
        import blake3

        h = blake3.blake3() if name == "blake3" else hashlib.new(name)
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()


@dataclass
class Entity:
    """What is served at one path: the bytes and their validators."""

    blob: Blob
    etag: str
    last_modified: str
    content_disposition: str | None = None
    content_type: str = "application/octet-stream"

    @property
    def size(self) -> int:
        return self.blob.size


UNSATISFIABLE = "unsatisfiable"


def parse_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range, ``UNSATISFIABLE``, or None.

    None means "serve the whole entity": no header, a malformed one, or several ranges (a server
    may ignore Range, RFC 9110 §14.2 -- which is exactly what clients must be ready for).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return UNSATISFIABLE
            return (max(total - suffix, 0), total - 1) if total else UNSATISFIABLE
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= total:
        return UNSATISFIABLE
    return start, total - 1 if end is None else min(end, total - 1)


# -- faults and pacing -------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected misbehaviour. Faults are tried in the order added; the first that matches a
    request is applied (one per request) and its ``times`` decremented (-1 = forever)."""

    path: str | None = None
    """Exact path it applies to; None = every path."""
    times: int = 1
    """How many requests it hits; -1 = every matching request."""
    reset_after: int | None = None
    """Abort the TCP connection (RST) after sending this many body bytes."""
    status: int | None = None
    """Reply with this status (e.g. 500, 503, 429, 408, 403) and a short body instead."""
    retry_after: str | None = None
    """``Retry-After`` value to send with the reply."""
    headers: dict[str, str] | None = None
    """Extra reply headers (e.g. a Hugging Face ``RateLimit`` header)."""
    ignore_range: bool = False
    """Reply 200 with the full body although a Range was asked for."""
    wrong_content_range: bool = False
    """Reply 206 but for the range shifted by +1 byte (Content-Range and body both shifted)."""
    stall_after: int | None = None
    """Go silent after this many body bytes, for ``stall_seconds``."""
    stall_seconds: float = 0.0
    """How long a stall lasts."""
    close_after_stall: bool = False
    """After the stall, close the connection instead of sending the rest."""
    short_body: bool = False
    """Promise the full Content-Length but close (FIN) after half of it."""
    only_ranged: bool = False
    """Apply only to requests that carry a Range header."""
    match_offset: int | None = None
    """Apply only to ranged requests whose range starts at this offset."""
    method: str | None = "GET"
    """Apply only to this method (None = any; HEAD probes do not eat GET faults by default)."""
    hits: int = 0
    """How many requests this fault was applied to (read it in tests)."""

    def matches(self, method: str, path: str, ranged: bool, offset: int | None) -> bool:
        if self.times == 0:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and path != self.path:
            return False
        if (self.only_ranged or self.match_offset is not None) and not ranged:
            return False
        return self.match_offset is None or offset == self.match_offset

    @property
    def alters_body(self) -> bool:
        return (self.reset_after is not None or self.stall_after is not None or self.short_body)


class Pacer:
    """Virtual-clock rate limiter: each chunk reserves ``n / rate`` seconds of wire time.

    A little lag (50 ms) is forgiven so that sleep overshoot does not drag the average below the
    cap, while an idle connection earns no burst credit.
    """

    SLACK = 0.05

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self._next: float | None = None

    def reserve(self, n: int, now: float) -> float:
        """Reserve ``n`` bytes; return how long to wait before sending them."""
        start = now if self._next is None else max(self._next, now - self.SLACK)
        self._next = start + n / self.rate
        return self._next - now


# -- the body writer shared by every server ----------------------------------------------------


def _status_reply(status: int, headers: dict[str, str], body: bytes | None = None) -> web.Response:
    return web.Response(status=status, headers=headers,
                        body=body if body is not None else f"injected {status}\n".encode(),
                        content_type="text/plain")


async def send_entity(request: web.Request, ent: Entity, *, fault: Fault | None = None,
                      pacers: tuple[Pacer, ...] = (),
                      extra_headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Serve ``ent`` for GET/HEAD with exact range semantics, optional fault and pacing."""
    record: RequestRecord = request[RECORD]
    total = ent.size
    headers = {"Accept-Ranges": "bytes", "Content-Encoding": "identity", "ETag": ent.etag,
               "Last-Modified": ent.last_modified, "Content-Type": ent.content_type}
    if ent.content_disposition:
        headers["Content-Disposition"] = ent.content_disposition
    headers.update(extra_headers or {})
    if fault is not None and fault.headers:
        headers.update(fault.headers)
    if_range = request.headers.get("If-Range")
    rng = None
    honour_range = not (fault is not None and fault.ignore_range)
    if honour_range and (if_range is None or if_range == ent.etag):
        rng = parse_range(request.headers.get("Range"), total)
    if rng == UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{total}"
        return web.Response(status=416, headers=headers)
    if rng is None:
        status, start, length = 200, 0, total
    else:
        start, end = rng  # type: ignore[misc]
        if fault is not None and fault.wrong_content_range:
            start, end = min(start + 1, total - 1), min(end + 1, total - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        status, length = 206, end - start + 1
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    record.status = status
    await resp.prepare(request)
    if request.method == "HEAD" or length == 0:
        await resp.write_eof()
        return resp
    if (fault is None or not fault.alters_body) and not pacers:
        await _send_fast(request, resp, ent.blob, start, length)
    else:
        await _send_paced(request, resp, ent.blob, start, length, fault, pacers)
    return resp


async def _send_fast(request: web.Request, resp: web.StreamResponse, blob: Blob, start: int,
                     length: int) -> None:
    record: RequestRecord = request[RECORD]
    handle = blob.open()
    try:
        if handle is not None and request.transport is not None:
            # zero-copy, in slices so that bytes_sent stays meaningful when a client hangs up
            loop = asyncio.get_running_loop()
            while record.bytes_sent < length:
                n = min(_SENDFILE_SLICE, length - record.bytes_sent)
                record.bytes_sent += await loop.sendfile(request.transport, handle,
                                                         start + record.bytes_sent, n)
        else:
            await _write_chunks(resp, blob, handle, start, length, record)
    except ConnectionError:  # the client hung up (a stolen part, a cancelled pull): normal
        record.outcome = "client-gone"
        return
    finally:
        if handle is not None:
            handle.close()
    await resp.write_eof()


async def _write_chunks(resp: web.StreamResponse, blob: Blob, handle: Any, start: int,
                        length: int, record: RequestRecord) -> None:
    pos = 0
    while pos < length:
        n = min(_FAST_CHUNK, length - pos)
        await resp.write(blob.read(handle, start + pos, n))
        pos += n
        record.bytes_sent = pos


async def _send_paced(request: web.Request, resp: web.StreamResponse, blob: Blob, start: int,
                      length: int, fault: Fault | None, pacers: tuple[Pacer, ...]) -> None:
    """Chunked writes with pacing and the body faults (stall, reset, short body)."""
    record: RequestRecord = request[RECORD]
    loop = asyncio.get_running_loop()
    cut, how = length, None
    stall = None
    if fault is not None:
        if fault.reset_after is not None:
            cut, how = min(fault.reset_after, length), "reset"
        elif fault.short_body:
            cut, how = length // 2, "closed"
        stall = fault.stall_after
    chunk = _PACED_CHUNK if pacers else _FAST_CHUNK
    handle = blob.open()
    try:
        pos = 0
        while True:
            if stall is not None and pos >= stall:
                stall = None
                await _flush(request)
                await asyncio.sleep(fault.stall_seconds)  # type: ignore[union-attr]
                if fault.close_after_stall:  # type: ignore[union-attr]
                    cut, how = pos, "closed"
            if pos >= cut:
                break
            n = min(chunk, cut - pos)
            if stall is not None:
                n = min(n, stall - pos)
            if pacers:
                now = loop.time()
                delay = max(p.reserve(n, now) for p in pacers)
                if delay > 0:
                    await asyncio.sleep(delay)
            await resp.write(blob.read(handle, start + pos, n))
            pos += n
            record.bytes_sent = pos
    finally:
        if handle is not None:
            handle.close()
    if how is not None:
        record.outcome = how
        await _flush(request)
        _hang_up(request, reset=(how == "reset"))
        return
    await resp.write_eof()


async def _flush(request: web.Request, limit: float = 5.0) -> None:
    """Wait until the transport has handed everything written so far to the kernel."""
    transport = request.transport
    deadline = time.monotonic() + limit
    while transport is not None and not transport.is_closing() \
            and transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


def _hang_up(request: web.Request, *, reset: bool) -> None:
    """Close the connection: an RST (SO_LINGER 0) for ``reset``, else an orderly FIN."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


# -- the server --------------------------------------------------------------------------------


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")
    return web.Response(status=status, text=body, content_type="application/xml")


class RangeServer(LoopbackServer):
    """A CDN / S3-like file server. See the module docstring for what it can do.

    ``per_connection_rate`` caps each reply (HTTP/1.1 serves one reply at a time per TCP
    connection, so this is a per-connection cap); ``total_rate`` caps all replies together.
    """

    def __init__(self, *, per_connection_rate: int | None = None, total_rate: int | None = None,
                 head_allowed: bool = True, require_auth: str | None = None,
                 reject_auth: bool = False, require_signature: bool = False) -> None:
        super().__init__()
        self.per_connection_rate = per_connection_rate
        self.total_rate = total_rate
        self.head_allowed = head_allowed
        self.require_auth = require_auth
        self.reject_auth = reject_auth
        self.require_signature = require_signature
        self.faults: list[Fault] = []
        self._files: dict[str, Entity] = {}
        self._generation = 0
        self._signatures: dict[str, tuple[str, float]] = {}
        self._expired: set[str] = set()
        self._secret = secrets.token_bytes(16)
        self._total_pacer: Pacer | None = None
        self._total_pacer_rate: int | None = None

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    # -- content -----------------------------------------------------------------------------

    def add_file(self, path: str, data: bytes | Path, *, etag: str | None = None,
                 content_disposition: str | None = None,
                 last_modified: str | None = None) -> Entity:
        """Serve ``data`` (bytes, or a file streamed from disk) at ``path``."""
        path = "/" + path.lstrip("/")
        blob = Blob(data)
        self._generation += 1
        ent = Entity(blob, etag or self._auto_etag(blob), last_modified or self._auto_date(),
                     content_disposition)
        self._files[path] = ent
        return ent

    def replace_file(self, path: str, data: bytes | Path) -> Entity:
        """Swap the content at ``path``; ETag and Last-Modified change (a "remote changed")."""
        old = self._files["/" + path.lstrip("/")]
        return self.add_file(path, data, content_disposition=old.content_disposition)

    def set_etag(self, path: str, etag: str) -> None:
        """Force the ETag served for ``path`` (quotes are added if missing)."""
        self._files["/" + path.lstrip("/")].etag = etag if etag.startswith(("\"", "W/")) \
            else f'"{etag}"'

    def remove_file(self, path: str) -> None:
        """Stop serving ``path`` (it answers 404 from now on)."""
        self._files.pop("/" + path.lstrip("/"), None)

    def entity(self, path: str) -> Entity:
        """What is served at ``path``."""
        return self._files["/" + path.lstrip("/")]

    def _auto_etag(self, blob: Blob) -> str:
        if blob.path is None:
            return f'"{blob.digest("md5")}"'
        st = blob.path.stat()
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}-{self._generation}"'

    def _auto_date(self) -> str:
        return formatdate(_BASE_TIME + 60 * self._generation, usegmt=True)

    # -- faults and presigned URLs -----------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Queue a fault (see ``Fault``); returns it so a test can read ``hits``."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, method: str, path: str, ranged: bool, offset: int | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, ranged, offset):
                    if fault.times > 0:
                        fault.times -= 1
                    fault.hits += 1
                    return fault
        return None

    def signed_url(self, path: str, *, expires_in: float = 3600,
                   content_disposition: str | None = None) -> str:
        """A presigned-looking URL (X-Amz-* query) for ``path``, valid for ``expires_in`` s."""
        path = "/" + path.lstrip("/")
        nonce = secrets.token_hex(8)
        sig = hmac.new(self._secret, f"{path}\n{nonce}".encode(), hashlib.sha256).hexdigest()
        self._signatures[sig] = (path, time.monotonic() + expires_in)
        query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                 "X-Amz-Credential": "AKIATESTLOOPBACK/20250101/us-east-1/s3/aws4_request",
                 "X-Amz-Date": "20250101T000000Z", "X-Amz-Expires": str(int(expires_in)),
                 "X-Amz-SignedHeaders": "host"}
        if content_disposition:
            query["response-content-disposition"] = content_disposition
        query["X-Amz-Signature"] = sig
        return f"{self.base_url}{path}?{urlencode(query)}"

    def expire_signed_urls(self) -> None:
        """Make every URL handed out so far answer 403 "Request has expired"."""
        self._expired.update(self._signatures)

    def _check_signature(self, request: web.Request) -> web.Response | None:
        sig = request.query.get("X-Amz-Signature")
        if sig is None:
            if self.require_signature:
                return _s3_error(403, "AccessDenied", "Request is not signed")
            return None
        known = self._signatures.get(sig)
        if known is None or known[0] != request.path:
            return _s3_error(403, "SignatureDoesNotMatch",
                             "The request signature we calculated does not match the signature "
                             "you provided.")
        if sig in self._expired or time.monotonic() > known[1]:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return None

    def _check_auth(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        if self.reject_auth and auth is not None:
            return _s3_error(400, "InvalidArgument",
                             "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                             "parameter, Signature query string parameter or the Authorization "
                             "header should be specified")
        if self.require_auth is not None and auth != f"Bearer {self.require_auth}":
            return web.json_response({"error": "Unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return None

    # -- request handling --------------------------------------------------------------------

    def _pacers(self) -> tuple[Pacer, ...]:
        pacers = []
        if self.per_connection_rate:
            pacers.append(Pacer(self.per_connection_rate))
        if self.total_rate:
            if self._total_pacer is None or self._total_pacer_rate != self.total_rate:
                self._total_pacer, self._total_pacer_rate = Pacer(self.total_rate), self.total_rate
            pacers.append(self._total_pacer)
        return tuple(pacers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD") or (request.method == "HEAD"
                                                     and not self.head_allowed):
            return web.Response(status=405, headers={"Allow": "GET"})
        refusal = self._check_auth(request) or self._check_signature(request)
        if refusal is not None:
            return refusal
        ent = self._files.get(request.path)
        range_header = request.headers.get("Range")
        parsed = parse_range(range_header, ent.size) if ent is not None else None
        offset = parsed[0] if isinstance(parsed, tuple) else None
        fault = self._take_fault(request.method, request.path, range_header is not None, offset)
        if fault is not None and fault.status is not None:
            headers = dict(fault.headers or {})
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            return _status_reply(fault.status, headers)
        if ent is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        extra = {}
        disposition = request.query.get("response-content-disposition")
        if disposition:
            extra["Content-Disposition"] = disposition
        if fault is not None and fault.retry_after is not None:
            extra["Retry-After"] = fault.retry_after
        return await send_entity(request, ent, fault=fault, pacers=self._pacers(),
                                 extra_headers=extra)


__all__ = [
    "UNSATISFIABLE",
    "Blob",
    "Entity",
    "Fault",
    "Pacer",
    "RangeServer",
    "RequestRecord",
    "parse_range",
    "send_entity",
]
