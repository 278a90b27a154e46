"""HTTP plumbing shared by the sources and the engine: one session shape, scoped credentials,
redirects followed by hand.

Redirects are followed here rather than by aiohttp so that two rules hold everywhere: a credential
is attached only to requests whose origin is the one it belongs to (never to a CDN or an S3 host
after a redirect), and the final URL is pinned, so every ranged part of a file hits the same blob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from .. import __version__
from ..errors import RemoteError
from ..settings import Settings
from ..sources.base import RemoteFile, origin_of
from .safe_paths import redact_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def make_session(settings: Settings, connections: int | None = None) -> aiohttp.ClientSession:
    """A client session sized for many ranged connections; no auto-decompression, no cookies.

    ``sock_read`` is the stall watchdog: a read that sees no byte for ``stall_timeout`` seconds
    raises, and the engine reconnects that part.
    """
    limit = (connections or settings.max_connections) + 8
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                     enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                    sock_connect=settings.connect_timeout,
                                    sock_read=settings.stall_timeout)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(), read_bufsize=2**18,
        headers={"User-Agent": f"modelmgr/{__version__}", "Accept-Encoding": "identity"})


def request_headers(remote: RemoteFile, settings: Settings, url: str,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers for one request: the source's own, plus the credential only on its own origin."""
    headers = dict(remote.headers)
    if extra:
        headers.update(extra)
    if remote.credential and remote.auth_origin and origin_of(url) == remote.auth_origin:
        token = settings.token_for(remote.credential)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    return headers


async def open_following(session: aiohttp.ClientSession, method: str, url: str,
                         remote: RemoteFile, settings: Settings,
                         extra: dict[str, str] | None = None,
                         hops: list[str] | None = None) -> tuple[aiohttp.ClientResponse, str]:
    """Send a request and follow redirects by hand; returns the final response and its URL.

    ``hops`` (if given) collects every Location seen, for callers that inspect them (CivitAI's
    redirect to its login page). The caller owns (and must close) the returned response.
    """
    for _ in range(settings.max_redirects + 1):
        resp = await session.request(method, url, headers=request_headers(remote, settings, url, extra),
                                     allow_redirects=False)
        if resp.status not in REDIRECT_STATUSES:
            return resp, url
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise RemoteError(f"{redact_url(url)} answered HTTP {resp.status} without a Location")
        nxt = urljoin(url, location)
        if urlsplit(nxt).scheme not in ("http", "https"):
            raise RemoteError(f"{redact_url(url)} redirected to a non-HTTP URL")
        if hops is not None:
            hops.append(nxt)
        if resp.status == 303:
            method = "GET"
        url = nxt
    raise RemoteError(f"too many redirects (more than {settings.max_redirects}) from "
                      f"{redact_url(remote.url)}", "check the URL; raise MODELMGR_MAX_REDIRECTS")


@dataclass(frozen=True)
class ContentRange:
    """A parsed ``Content-Range: bytes first-last/total`` header (``total`` None for ``*``)."""

    first: int
    last: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse a Content-Range header; None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return ContentRange(first, last, total)


def normalize_etag(value: str | None) -> str | None:
    """Strip ``W/`` and quotes, as huggingface_hub does, so validators compare by value."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None
