"""What every loopback test server shares: lifecycle, a request log, injected status replies.

Tests and benchmarks talk to real aiohttp servers on 127.0.0.1 (DESIGN.md: "servers in tests are
real"). Each server logs every request it sees, so a test can count requests and bytes and prove
which headers (a token!) reached which host. A server runs inside the test's event loop
(``async with``) or, for sync code such as benchmarks, on a loop of its own in a background
thread (``run_in_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

LOCALHOST = "127.0.0.1"


@dataclass
class RequestRecord:
    """One request as the server saw it; filled in while the reply is sent."""

    method: str
    """HTTP method."""
    path: str
    """Decoded URL path."""
    query: dict[str, str]
    """Query parameters (last value wins for repeated keys)."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    range: str | None
    """The ``Range`` header, if any."""
    remote_port: int
    """Client's TCP port: requests with the same port came over the same connection."""
    connection: str
    """``host:port`` of the client end, a connection id while that connection lives."""
    status: int | None = None
    """Status sent (None while headers are not out yet or when the handler crashed)."""
    bytes_sent: int = 0
    """Body bytes handed to the socket."""
    outcome: str = "ok"
    """``ok``, or what cut the reply short: ``reset``, ``closed``, ``client-gone``."""

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower())


RECORD = web.RequestKey("record", RequestRecord)
"""Where a handler finds the log record of the request it serves."""


@dataclass
class _Injected:
    """A canned reply from ``fail_next``: path prefix, status, extra headers, remaining uses."""

    prefix: str
    status: int
    headers: dict[str, str]
    body: bytes
    times: int


class LoopbackServer:
    """Base class: an aiohttp app on 127.0.0.1 (ephemeral port) with a request log.

    Subclasses add routes in ``_routes`` and may own child servers (a CDN, a storage host) that
    start and stop with them.
    """

    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.port: int = 0
        self.children: list[LoopbackServer] = []
        self._runner: web.AppRunner | None = None
        self._injected: list[_Injected] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def start(self) -> None:
        """Start the children, then this server on an ephemeral port."""
        for child in self.children:
            await child.start()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        self._routes(app)
        # handler_cancellation: a client that hangs up stops a paced or stalled reply at once;
        # a short shutdown_timeout keeps stop() fast even with stalled replies in flight.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, 0, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop this server and its children; idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        for child in self.children:
            await child.stop()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addressing --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{LOCALHOST}:{self.port}"

    def url(self, path: str, **query: Any) -> str:
        """Absolute URL for ``path`` (must start with ``/``) with optional query parameters."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path + (("?" + urlencode(query)) if query else "")

    # -- request log -------------------------------------------------------------------------

    def clear_log(self) -> None:
        """Forget the requests seen so far."""
        self.requests.clear()

    def requests_to(self, path_prefix: str = "/", method: str | None = None) -> list[RequestRecord]:
        """Logged requests whose path starts with ``path_prefix`` (and of ``method``)."""
        return [r for r in self.requests if r.path.startswith(path_prefix)
                and (method is None or r.method == method)]

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent over all logged requests."""
        return sum(r.bytes_sent for r in self.requests)

    # -- injected failures -------------------------------------------------------------------

    def fail_next(self, path_prefix: str, status: int, headers: dict[str, str] | None = None, *,
                  times: int = 1, body: bytes | str | None = None) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status`` (-1: always).

        For 429/5xx storms: e.g. ``fail_next("/api/", 429, {"RateLimit": '"api";r=0;t=1'})``.
        """
        if isinstance(body, str):
            body = body.encode()
        if body is None:
            body = b'{"error": "injected failure"}'
        with self._lock:
            self._injected.append(_Injected(path_prefix, status, dict(headers or {}), body, times))

    def _take_injected(self, path: str) -> _Injected | None:
        with self._lock:
            for inj in self._injected:
                if inj.times != 0 and path.startswith(inj.prefix):
                    if inj.times > 0:
                        inj.times -= 1
                    return inj
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        host, port = (peer[0], peer[1]) if peer else ("?", 0)
        record = RequestRecord(
            method=request.method, path=request.path, query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            range=request.headers.get("Range"), remote_port=port, connection=f"{host}:{port}")
        self.requests.append(record)
        request[RECORD] = record
        try:
            injected = self._take_injected(request.path)
            if injected is not None:
                headers = {"Content-Type": "application/json", **injected.headers}
                resp: web.StreamResponse = web.Response(
                    status=injected.status, body=injected.body, headers=headers)
            else:
                resp = await handler(request)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            record.outcome = "client-gone" if record.outcome == "ok" else record.outcome
            raise
        if record.status is None:
            record.status = resp.status
        if isinstance(resp, web.Response) and request.method != "HEAD" and not resp.prepared:
            body = resp.body
            record.bytes_sent = len(body) if isinstance(body, (bytes, bytearray)) else 0
        return resp


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply (compact, like the real APIs)."""
    return web.Response(status=status, text=json.dumps(data, separators=(",", ":")),
                        content_type="application/json", headers=headers)


@contextlib.contextmanager
def run_in_thread(server: LoopbackServer) -> Iterator[LoopbackServer]:
    """Run ``server`` on its own event loop in a daemon thread, for sync callers (benchmarks).

    Configuration methods (``add_file``, ``add_fault``...) are plain attribute updates and may be
    called from the caller's thread while it runs.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"{type(server).__name__}-loop",
                              daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        yield server
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()


__all__ = ["LOCALHOST", "RECORD", "LoopbackServer", "RequestRecord", "json_response",
           "run_in_thread"]
