"""What a source hands the download engine: a list of ``RemoteFile`` values.

Sources resolve only, they never download (DESIGN.md). A ``RemoteFile`` says where the bytes are,
how many there should be, which hashes they must have and which credential may be attached, and to
which host. It never holds the token itself: the engine asks ``Settings.token_for`` at request time,
so resumed downloads pick up the current credentials and nothing secret is ever written to state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit credentials are scoped to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, fully resolved and pinned."""

    url: str
    """Where to GET the bytes (may redirect, e.g. the Hub's resolve URL to its CDN)."""
    name: str
    """Relative destination path, already checked by ``safe_relpath``."""
    source: str
    """Human/spec form of where it came from, e.g. ``hf:org/repo@<commit>/path``; no secrets."""
    size: int | None = None
    """Exact byte count when the source knows it (HF LFS size, CivitAI sizeKB is only approximate)."""
    sha256: str | None = None
    """Expected sha256, lowercase hex."""
    blake3: str | None = None
    """Expected BLAKE3, lowercase hex (CivitAI gives it)."""
    etag: str | None = None
    """Validator known at resolve time; a different one at download time means the file changed."""
    revision: str | None = None
    """Pinned revision (HF commit sha, CivitAI file id)."""
    credential: str | None = None
    """Name of the credential to attach (``hf`` / ``civitai``) or None."""
    auth_origin: str | None = None
    """Origin (``origin_of``) that may receive the credential; never any other host."""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """Extra non-secret request headers the source needs (e.g. CivitAI's JSON content type)."""
    size_is_exact: bool = True
    """False when ``size`` is only an estimate (CivitAI); the server's Content-Range then wins."""

    @property
    def expected_hash(self) -> tuple[str, str] | None:
        """The hash used for verification: sha256 preferred, BLAKE3 when that is all we have."""
        if self.sha256:
            return ("sha256", self.sha256.lower())
        if self.blake3:
            return ("blake3", self.blake3.lower())
        return None

    def identity(self) -> dict:
        """What must be unchanged for a partial download to be resumed."""
        return {"source": self.source, "revision": self.revision, "etag": self.etag,
                "sha256": self.sha256, "blake3": self.blake3,
                "size": self.size if self.size_is_exact else None}


class Source(Protocol):
    """A place files come from. ``resolve`` returns pinned ``RemoteFile`` values, downloads nothing."""

    async def resolve(self) -> list[RemoteFile]:  # pragma: no cover - protocol
        ...
