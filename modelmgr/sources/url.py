"""Plain URLs: size and validators from HEAD (or a ``bytes=0-0`` GET when HEAD is refused), the
name from ``Content-Disposition`` or the URL path, hashes only from the user."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import aiohttp

from ..download.http import make_session, normalize_etag, open_following, parse_content_range
from ..download.safe_paths import (filename_from_content_disposition, filename_from_url,
                                   redact_url, safe_relpath)
from ..errors import AuthError, NotFoundError, RemoteError, UsageError
from ..settings import Settings
from .base import RemoteFile

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def check_hex(value: str | None, length: int, label: str) -> str | None:
    """Validate a user-supplied hex digest; returns it lowercased."""
    if value is None:
        return None
    value = value.strip()
    if len(value) != length or not _HEX.match(value):
        raise UsageError(f"--{label} must be {length} hex characters, got {value[:80]!r}")
    return value.lower()


class UrlSource:
    """One file at an http(s) URL."""

    def __init__(self, settings: Settings, url: str, *, sha256: str | None = None,
                 blake3: str | None = None, name: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) URL: {redact_url(url)}",
                             "give a full URL such as https://host/path/model.safetensors")
        if parts.username or parts.password:
            raise UsageError("credentials inside the URL are not accepted",
                             "remove user:password@ from the URL")
        self.settings = settings
        self.url = url
        self.sha256 = check_hex(sha256, 64, "sha256")
        self.blake3 = check_hex(blake3, 64, "blake3")
        self.name = name

    async def resolve(self) -> list[RemoteFile]:
        bare = RemoteFile(url=self.url, name="download", source=redact_url(self.url))
        async with make_session(self.settings, 2) as session:
            try:
                resp, final = await open_following(session, "HEAD", self.url, bare, self.settings)
                if resp.status in (405, 501, 403) or (resp.status == 200 and
                                                      "Content-Length" not in resp.headers):
                    resp.close()
                    resp, final = await open_following(session, "GET", self.url, bare,
                                                       self.settings, {"Range": "bytes=0-0"})
                try:
                    return [self._remote_from(resp, final)]
                finally:
                    resp.close()
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                raise RemoteError(f"cannot reach {redact_url(self.url)}: {type(exc).__name__}",
                                  "check the URL and the network") from None

    def _remote_from(self, resp: aiohttp.ClientResponse, final: str) -> RemoteFile:
        shown = redact_url(self.url)
        if resp.status in (401, 403):
            raise AuthError(f"{shown} needs credentials (HTTP {resp.status})",
                            "plain URLs are fetched without tokens; use `pull hf` or "
                            "`pull civitai` for those hosts")
        if resp.status in (404, 410):
            raise NotFoundError(f"{shown} does not exist (HTTP {resp.status})")
        if resp.status not in (200, 206):
            raise RemoteError(f"{shown} answered HTTP {resp.status}", "try again later")
        size = None
        if resp.status == 206:
            cr = parse_content_range(resp.headers.get("Content-Range"))
            size = cr.total if cr else None
        elif resp.headers.get("Content-Length", "").isdigit():
            size = int(resp.headers["Content-Length"])
        name = (self.name
                or filename_from_content_disposition(resp.headers.get("Content-Disposition"))
                or filename_from_url(final) or filename_from_url(self.url))
        if not name:
            raise UsageError(f"cannot tell a file name for {shown}", "pass --name")
        return RemoteFile(url=self.url, name=safe_relpath(name, allow_dirs=False),
                          source=shown, size=size, sha256=self.sha256, blake3=self.blake3,
                          etag=normalize_etag(resp.headers.get("ETag")))
