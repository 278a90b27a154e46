"""CivitAI source: turn whatever a user pasted into one pinned file of one model version.

Users paste model-page URLs, download URLs, API URLs or bare version ids; ``parse_civitai_ref``
accepts them all. Resolution asks REST v1 for the version (or the model's newest version), picks a
file (the primary one unless a file id pins it) and hands the engine a download URL pinned with
``fileId`` -- the unfiltered endpoint may serve a different file of the same version
(protocols.md §2b). The API key goes only to the API origin, as ``Authorization: Bearer``: never
``?token=``, which ends up in access logs and in the presigned storage URL's neighbourhood.

``civitai_download_error`` maps CivitAI's refusal shapes (401 JSON, a redirect to the login page
with ``reason=download-auth``, 403 early access) to clear errors; the download engine calls it too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from ..download.safe_paths import redact_url, safe_relpath
from ..errors import AuthError, ModelMgrError, NotFoundError, RemoteError, UsageError
from ..settings import Settings
from ._retry import RETRY_STATUSES, Retryable, retrying, server_delay
from .base import RemoteFile, origin_of

JSON_HEADERS = (("Content-Type", "application/json"),)
"""Sent on every CivitAI request: with it, a login-gated download answers 401 JSON instead of
redirecting to an HTML login page (which naive clients save as the model)."""
_MAX_JSON = 16 * 1024 * 1024
_KEY_PAGE = "https://civitai.com/user/account"
_AIR = re.compile(r"^urn:air:[\w.-]+:[\w.-]+:civitai:(\d+)@(\d+)$", re.IGNORECASE)
_URL_PATHS = (  # path prefix -> what the next segment is
    (("models",), "model"),  # the page users paste: /models/123[/slug][?modelVersionId=456]
    (("model-versions",), "version"),
    (("api", "download", "models"), "version"),
    (("api", "v1", "model-versions"), "version"),
    (("api", "v1", "models"), "model"),
)
_USAGE_HINT = ("use a version id (456), a model page URL "
               "(https://civitai.com/models/123?modelVersionId=456) or a download URL "
               "(https://civitai.com/api/download/models/456)")


@dataclass(frozen=True)
class CivitaiRef:
    """What a pasted reference names; at least one of the ids is set."""

    version_id: int | None = None
    """Model version id (``modelVersionId``)."""
    model_id: int | None = None
    """Model id; without a version it means the newest version."""
    file_id: int | None = None
    """A file of the version (``fileId``); None means the primary file."""


def _id(text: str | None, what: str, shown: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"CivitAI {what} must be a positive number, got {text[:40]!r} in {shown}",
                         _USAGE_HINT)
    return int(text)


def parse_civitai_ref(text: str) -> CivitaiRef:
    """Parse a version id, an AIR, or any CivitAI model/download/API URL into a ``CivitaiRef``.

    Accepted: ``456``, ``civitai:456``, ``civitai:456?fileId=7``, ``123@456``,
    ``urn:air:sdxl:checkpoint:civitai:123@456``, ``https://civitai.com/models/123[/slug]
    [?modelVersionId=456]``, ``.../api/download/models/456[?fileId=7]``,
    ``.../api/v1/model-versions/456``, ``.../api/v1/models/123``. The host is not checked: API
    calls always go to the configured CivitAI base URL.
    """
    raw = (text or "").strip()
    shown = redact_url(raw) if "://" in raw else raw[:120]
    if raw.lower().startswith("civitai:"):
        raw = raw[len("civitai:"):]
    air = _AIR.match(raw)
    if air:
        return CivitaiRef(version_id=int(air.group(2)), model_id=int(air.group(1)))
    head, _, query_text = raw.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    file_id = _id(query.get("fileId"), "file id", shown)
    if head.isdigit():
        return CivitaiRef(version_id=_id(head, "version id", shown), file_id=file_id)
    pair = re.fullmatch(r"(\d+)@(\d+)", head)
    if pair:
        return CivitaiRef(version_id=int(pair.group(2)), model_id=int(pair.group(1)),
                          file_id=file_id)
    if "://" not in raw:  # "civitai.com/models/1" or "/models/1" or "models/1"
        first = raw.lstrip("/").split("/", 1)[0]
        raw = ("https://" + raw) if "." in first else "https://civitai.invalid/" + raw.lstrip("/")
    segs = [s for s in urlsplit(raw).path.split("/") if s]
    ids = {"version": query.get("modelVersionId"), "model": None}
    for prefix, kind in _URL_PATHS:
        if len(segs) > len(prefix) and tuple(segs[:len(prefix)]) == prefix:
            ids[kind] = segs[len(prefix)]
            break
    else:
        raise UsageError(f"not a CivitAI model reference: {shown}", _USAGE_HINT)
    return CivitaiRef(version_id=_id(ids["version"], "version id", shown),
                      model_id=_id(ids["model"], "model id", shown), file_id=file_id)


def _clean(text: Any, limit: int = 200) -> str:
    """Server-supplied text, safe for a terminal: no control characters, bounded length."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text))[:limit].strip()


def _error_body(body: bytes) -> dict:
    try:
        data = json.loads(body[:65536])
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_login_redirect(location: str | None) -> bool:
    if not location:
        return False
    parts = urlsplit(location)
    reasons = parse_qs(parts.query).get("reason", [])
    return parts.path.rstrip("/").endswith("/login") or "download-auth" in reasons


def civitai_download_error(status: int, body: bytes, location: str | None, *,
                           token_set: bool = False,
                           what: str = "this file") -> ModelMgrError | None:
    """The error a CivitAI refusal means, or None when ``status`` is not one of them.

    Covers 401, a 3xx to the login page (``reason=download-auth``: the creator requires login and
    the request was not authenticated), 403 early access (``{"error": "Early Access",
    "deadline": ...}``), any other 403, and 404. ``token_set`` says whether CIVITAI_TOKEN was sent,
    which turns "log in" into "your key was not accepted".
    """
    info = _error_body(body)
    error = _clean(info.get("error", ""))
    if status == 403 and (error.lower().replace("-", " ") == "early access" or "deadline" in info):
        deadline = _clean(info.get("deadline") or "an unannounced date")
        return AuthError(f"{what} is in early access on CivitAI until {deadline}",
                         "wait until then, or buy early access on CivitAI and set CIVITAI_TOKEN "
                         "to that account's API key")
    if status == 401 or (300 <= status < 400 and _is_login_redirect(location)):
        if token_set:
            return AuthError(f"CivitAI did not accept CIVITAI_TOKEN for {what}",
                             f"create a new API key at {_KEY_PAGE} and set CIVITAI_TOKEN")
        return AuthError(f"the creator requires a CivitAI login to download {what}",
                         f"create an API key at {_KEY_PAGE} and set CIVITAI_TOKEN")
    if status == 403:
        detail = f": {error}" if error else ""
        return AuthError(f"CivitAI refused access to {what} (HTTP 403{detail})",
                         "check that CIVITAI_TOKEN belongs to an account allowed to download it")
    if status == 404:
        return NotFoundError(f"{what} was not found on CivitAI",
                             "check the id; deleted and unpublished versions are not visible")
    return None


def _hex(value: Any, length: int) -> str | None:
    """A lowercase hex digest of ``length`` chars, or None (CivitAI hashes are sometimes junk)."""
    if isinstance(value, str) and re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", value):
        return value.lower()
    return None


def _describe_file(f: dict) -> str:
    size = f.get("sizeKB")
    shown = "size unknown"
    if isinstance(size, (int, float)):
        shown = next(f"{size / 1024 ** i:.1f} {unit}"
                     for i, unit in enumerate(("KiB", "MiB", "GiB"))
                     if size < 1024 ** (i + 1) or unit == "GiB")
    return f"{f.get('id')} {_clean(f.get('name'), 80)} ({_clean(f.get('type'), 30)}, {shown})"


class CivitaiSource:
    """One file of one CivitAI model version."""

    def __init__(self, settings: Settings, ref: str, file_id: int | None = None) -> None:
        self.settings = settings
        self.base = settings.civitai_base_url.rstrip("/")
        parsed = parse_civitai_ref(ref)
        if file_id is not None and parsed.file_id is not None and file_id != parsed.file_id:
            raise UsageError(f"two different file ids: --file-id {file_id} and fileId="
                             f"{parsed.file_id} in the reference", "give only one")
        self.ref = CivitaiRef(parsed.version_id, parsed.model_id,
                              file_id if file_id is not None else parsed.file_id)

    async def resolve(self) -> list[RemoteFile]:
        """Fetch the version's metadata and describe the chosen file."""
        token = self.settings.token_for("civitai")
        headers = dict(JSON_HEADERS)
        headers["Accept"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout,
                                        sock_read=self.settings.connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            if self.ref.version_id is not None:
                vid = self.ref.version_id
                version = await self._get(session, f"/api/v1/model-versions/{vid}",
                                          f"model version {vid}", bool(token))
            else:
                mid = self.ref.model_id
                model = await self._get(session, f"/api/v1/models/{mid}",
                                        f"model {mid}", bool(token))
                versions = model.get("modelVersions")
                if not isinstance(versions, list) or not versions \
                        or not isinstance(versions[0], dict):
                    raise NotFoundError(f"model {mid} has no published versions on CivitAI")
                version = versions[0]
        return [self._remote_file(version, self._choose(version))]

    async def _get(self, session: aiohttp.ClientSession, path: str, what: str,
                   token_set: bool) -> dict:
        """GET a JSON object from the API, with retries; never follows redirects."""
        url = self.base + path

        async def attempt() -> dict:
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    body = await resp.content.read(_MAX_JSON + 1)
                    status, headers = resp.status, resp.headers
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise Retryable(RemoteError(
                    f"cannot reach CivitAI at {redact_url(self.base)}: {type(exc).__name__}",
                    "check the network and MODELMGR_CIVITAI_URL")) from None
            if status == 200:
                return self._parse(body, what)
            error = civitai_download_error(status, body, headers.get("Location"),
                                           token_set=token_set, what=what)
            if error is not None:
                raise error
            final = RemoteError(f"CivitAI answered HTTP {status} for {what}",
                                "CivitAI may be busy or down; retry later" if status >= 429
                                else "this looks like a CivitAI API change; please report it")
            if status in RETRY_STATUSES:
                raise Retryable(final, server_delay(headers))
            raise final

        return await retrying(self.settings, attempt)

    @staticmethod
    def _parse(body: bytes, what: str) -> dict:
        if len(body) > _MAX_JSON:
            raise RemoteError(f"CivitAI's answer for {what} is implausibly large")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise RemoteError(f"CivitAI answered something that is not a JSON object for {what}",
                              "a proxy or captive portal may be in the way; check "
                              "MODELMGR_CIVITAI_URL")
        return data

    def _choose(self, version: dict) -> dict:
        """The pinned file, else the primary file, else the first model file, else the first."""
        vid = version.get("id")
        files = [f for f in version.get("files") or [] if isinstance(f, dict)]
        if not files:
            raise NotFoundError(f"CivitAI model version {vid} has no files")
        if self.ref.file_id is not None:
            for f in files:
                if str(f.get("id")) == str(self.ref.file_id):
                    return f
            raise NotFoundError(f"file {self.ref.file_id} is not part of CivitAI model version "
                                f"{vid}", "its files: " + "; ".join(map(_describe_file, files)))
        for pick in (lambda f: f.get("primary") is True, lambda f: f.get("type") == "Model",
                     lambda f: True):
            chosen = next((f for f in files if pick(f)), None)
            if chosen is not None:
                return chosen
        raise AssertionError("unreachable")  # pragma: no cover

    def _remote_file(self, version: dict, f: dict) -> RemoteFile:
        try:
            vid, fid = int(version["id"]), int(f["id"])
        except (KeyError, TypeError, ValueError):
            raise RemoteError("CivitAI answered a version or file without a numeric id") from None
        hashes = f.get("hashes") if isinstance(f.get("hashes"), dict) else {}
        size_kb = f.get("sizeKB")
        size = round(float(size_kb) * 1024) \
            if isinstance(size_kb, (int, float)) and size_kb > 0 else None
        return RemoteFile(
            url=f"{self.base}/api/download/models/{vid}?fileId={fid}",
            name=safe_relpath(str(f.get("name") or ""), allow_dirs=False),
            source=f"civitai:{vid}?fileId={fid}",
            size=size,
            sha256=_hex(hashes.get("SHA256"), 64),
            blake3=_hex(hashes.get("BLAKE3"), 64),
            revision=str(fid),
            credential="civitai",
            auth_origin=origin_of(self.base),
            headers=JSON_HEADERS,
            size_is_exact=False,
        )


__all__ = [
    "JSON_HEADERS",
    "CivitaiRef",
    "CivitaiSource",
    "civitai_download_error",
    "parse_civitai_ref",
]
