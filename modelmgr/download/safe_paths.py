"""The one gate every remote-supplied name passes before it touches disk, and URL redaction.

Remote names come from repo paths, CivitAI ``files[].name``, ``Content-Disposition`` headers and
bundle files; all of them are untrusted. ``safe_relpath`` accepts only relative paths made of plain
components under both POSIX and Windows rules, so no name can escape the destination, address a
drive or UNC share, or smuggle control characters into a terminal or a log.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import UnsafePathError

_MAX_COMPONENT = 255
_MAX_PATH = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
_SECRET_QUERY_KEYS = {"token", "access_token", "api_key", "apikey", "key", "signature",
                      "x-amz-signature", "x-amz-credential", "x-amz-security-token", "sig"}


def safe_relpath(name: str, *, allow_dirs: bool = True) -> str:
    """Return ``name`` as a normalised POSIX relative path, or raise UnsafePathError.

    Rejected: empty names, absolute paths, drive letters (``C:x``), UNC/backslash paths, ``.`` and
    ``..`` components, NUL and other control characters, Windows reserved device names, components
    longer than 255 bytes. With ``allow_dirs=False`` the name must be a single component.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError("empty file name from the remote", "pick a name with --dest/--name")
    shown = name.encode("unicode_escape").decode("ascii")[:200]
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_PATH:
        raise UnsafePathError(f"remote file name is too long: {shown}…")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafePathError(f"remote file name contains control characters: {shown}")
    if "\\" in name:
        raise UnsafePathError(f"remote file name contains a backslash: {shown}")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafePathError(f"remote file name is absolute: {shown}")
    parts = name.split("/")
    if not allow_dirs and len(parts) > 1:
        raise UnsafePathError(f"remote file name contains a directory: {shown}")
    clean: list[str] = []
    for part in parts:
        if part == "":
            continue  # tolerate "a//b" and a trailing slash
        if part in (".", ".."):
            raise UnsafePathError(f"remote file name walks out of its folder: {shown}")
        if ":" in part:
            raise UnsafePathError(f"remote file name contains ':' (drive or stream): {shown}")
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT:
            raise UnsafePathError(f"remote file name component is too long: {shown[:80]}…")
        if part.split(".")[0].upper() in _WINDOWS_RESERVED or part.rstrip(" .") != part:
            raise UnsafePathError(f"remote file name is not portable: {shown}")
        clean.append(part)
    if not clean:
        raise UnsafePathError(f"remote file name is empty after normalising: {shown}")
    return str(PurePosixPath(*clean))


def safe_join(root: Path, name: str, *, allow_dirs: bool = True) -> Path:
    """Join a checked remote name under ``root`` and confirm the result stays inside it."""
    rel = safe_relpath(name, allow_dirs=allow_dirs)
    root_resolved = Path(root).resolve()
    target = (root_resolved / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(f"remote file name escapes {root}: {rel} (a symlink in the way?)")
    return root_resolved / rel


def filename_from_content_disposition(header: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header offers (RFC 6266 ``filename*`` first).

    The result is still untrusted: callers pass it through ``safe_relpath(..., allow_dirs=False)``.
    """
    if not header:
        return None
    star = re.search(r"filename\*\s*=\s*([^;]+)", header, re.IGNORECASE)
    if star:
        value = star.group(1).strip().strip('"')
        if "''" in value:
            value = value.split("''", 1)[1]
        return unquote(value) or None
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)', header, re.IGNORECASE)
    if plain:
        value = plain.group(2) if plain.group(2) is not None else plain.group(1)
        return value.strip().replace('\\"', '"') or None
    return None


def filename_from_url(url: str) -> str | None:
    """The last path component of a URL, percent-decoded, or None."""
    path = urlsplit(url).path
    last = unquote(path.rsplit("/", 1)[-1]) if path else ""
    return last or None


def redact_url(url: str) -> str:
    """A URL safe for logs and errors: no userinfo, secret-looking query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "REDACTED" if k.lower() in _SECRET_QUERY_KEYS else v)
                           for k, v in pairs], safe="")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
