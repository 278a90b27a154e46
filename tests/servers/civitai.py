"""``CivitaiServer``: the CivitAI REST v1 endpoints modelmgr uses, and its S3-like storage.

JSON shapes follow the real API (protocols.md §2b): ``files[]`` with ``sizeKB`` as float KiB,
UPPERCASE hashes, ``metadata{format,size,fp}``, ``primary``. The download endpoint answers like the
real handler: 307 to a presigned URL on another origin (``civ.storage``, which rejects any request
carrying an ``Authorization`` header, as S3 does, and names the file in ``Content-Disposition``);
for login-gated files without a valid token, 401 JSON only when the request said
``Content-Type: application/json``, else a 307 to ``/login?...&reason=download-auth`` (whose page
is HTML with status 200 -- the trap that makes naive tools save a login page as a model); early
access gives 403 ``{"error": "Early Access", "deadline": ...}``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from .base import LoopbackServer, json_response
from .ranges import Blob, RangeServer

_DATE = "2025-01-01T00:00:00.000Z"


@dataclass
class CivitaiFile:
    """One file of a model version, as the test defines it."""

    id: int
    name: str
    """``files[].name`` (untrusted on purpose in some tests)."""
    data: bytes | Path
    primary: bool = False
    type: str = "Model"
    fmt: str = "SafeTensor"
    fp: str | None = "fp16"
    size_label: str | None = "pruned"
    sha256: str | None = None
    """Advertise this SHA256 instead of the real one (CivitAI metadata is sometimes wrong)."""
    blake3: str | None = None
    """Advertise this BLAKE3 instead of the real one."""
    storage_name: str | None = None
    """Name in the storage's Content-Disposition when it differs from ``name``."""


@dataclass
class _Version:
    version_id: int
    model_id: int
    files: list[CivitaiFile]
    hashes: dict[int, dict[str, str]]
    login_required: bool
    early_access: bool
    deadline: str
    name: str
    base_model: str
    storage_paths: dict[int, str] = field(default_factory=dict)


@dataclass
class _Model:
    model_id: int
    name: str
    type: str
    version_ids: list[int] = field(default_factory=list)
    """Newest first, like ``modelVersions``."""


def _hashes(blob: Blob) -> dict[str, str]:
    """The hash block CivitAI publishes, UPPERCASE hex (AutoV1/V2 as protocols.md describes)."""
    sha256 = blob.digest("sha256")
    crc = 0
    for chunk in blob.chunks():
        crc = zlib.crc32(chunk, crc)
    handle = blob.open()
    try:  # AutoV1: sha256 of the 64 KiB at offset 1 MiB (legacy A1111 hash)
        window = bytes(blob.read(handle, 0x100000, 0x10000)) if blob.size > 0x100000 else b""
    finally:
        if handle is not None:
            handle.close()
    return {"AutoV1": hashlib.sha256(window).hexdigest()[:8].upper(),
            "AutoV2": sha256[:10].upper(), "SHA256": sha256.upper(),
            "CRC32": f"{crc:08X}", "BLAKE3": blob.digest("blake3").upper(),
            "AutoV3": sha256[:12].upper()}


class CivitaiServer(LoopbackServer):
    """CivitAI on 127.0.0.1 with its storage (``civ.storage``) on a second port.

    ``token`` is the valid API key (``civ.token``; more in ``valid_tokens``). Keys are accepted as
    ``Authorization: Bearer`` or ``?token=`` (the request log shows which one a client used).
    """

    def __init__(self, *, token: str = "civitai_loopback_token",
                 storage: RangeServer | None = None) -> None:
        super().__init__()
        self.token = token
        self.valid_tokens: set[str] = set()
        self.storage = storage or RangeServer(reject_auth=True, require_signature=True)
        self.children.append(self.storage)
        self.versions: dict[int, _Version] = {}
        self.models: dict[int, _Model] = {}

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/model-versions/{id}", self._get_version)
        app.router.add_get("/api/v1/models/{id}", self._get_model)
        app.router.add_get("/api/download/models/{id}", self._download)
        app.router.add_get("/login", self._login_page)

    # -- content -----------------------------------------------------------------------------

    def add_version(self, version_id: int, model_id: int, files: list[CivitaiFile], *,
                    login_required: bool = False, early_access: bool = False,
                    deadline: str = "2099-01-01T00:00:00.000Z",
                    model_name: str = "Loopback Model", version_name: str = "v1.0",
                    base_model: str = "SDXL 1.0", model_type: str = "Checkpoint") -> dict:
        """Publish a version (newest of its model); returns its ``/model-versions`` JSON."""
        version = _Version(version_id, model_id, list(files), {}, login_required, early_access,
                           deadline, version_name, base_model)
        for f in files:
            blob = Blob(f.data)
            hashes = _hashes(blob)
            if f.sha256 is not None:
                hashes["SHA256"] = f.sha256.upper()
            if f.blake3 is not None:
                hashes["BLAKE3"] = f.blake3.upper()
            version.hashes[f.id] = hashes
            slug = re.sub(r"[^A-Za-z0-9._-]", "_", f.name)[:80] or "file"
            path = f"/civitai-prod/model/{model_id}/{f.id}/{slug}"
            cd_name = (f.storage_name or f.name).replace('"', '\\"')
            self.storage.add_file(path, f.data,
                                  content_disposition=f'attachment; filename="{cd_name}"')
            version.storage_paths[f.id] = path
        self.versions[version_id] = version
        model = self.models.setdefault(model_id, _Model(model_id, model_name, model_type))
        model.version_ids.insert(0, version_id)
        return self.version_json(version_id)

    def version_json(self, version_id: int, *, with_model: bool = True) -> dict:
        """The ``/api/v1/model-versions/{id}`` body."""
        v = self.versions[version_id]
        model = self.models[v.model_id]
        data = {
            "id": v.version_id, "modelId": v.model_id, "name": v.name, "createdAt": _DATE,
            "updatedAt": _DATE, "status": "Published", "publishedAt": _DATE,
            "trainedWords": [], "trainingStatus": None, "trainingDetails": None,
            "baseModel": v.base_model, "baseModelType": "Standard",
            "availability": "EarlyAccess" if v.early_access else "Public",
            "earlyAccessEndsAt": v.deadline if v.early_access else None,
            "earlyAccessConfig": {"timeframe": 7} if v.early_access else None,
            "description": None, "uploadType": "Created", "nsfwLevel": 1,
            "air": f"urn:air:sdxl:checkpoint:civitai:{v.model_id}@{v.version_id}",
            "stats": {"downloadCount": 0, "ratingCount": 0, "rating": 0, "thumbsUpCount": 0},
            "files": [self._file_json(v, f) for f in v.files], "images": [],
            "downloadUrl": f"{self.base_url}/api/download/models/{v.version_id}",
        }
        if with_model:
            data["model"] = {"name": model.name, "type": model.type, "nsfw": False, "poi": False}
        return data

    def _file_json(self, v: _Version, f: CivitaiFile) -> dict:
        size = Blob(f.data).size
        url = f"{self.base_url}/api/download/models/{v.version_id}"
        if not f.primary:
            url += f"?type={quote(f.type)}&format={quote(f.fmt)}"
        return {"id": f.id, "sizeKB": size / 1024, "name": f.name, "type": f.type,
                "pickleScanResult": "Success", "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success", "virusScanMessage": None, "scannedAt": _DATE,
                "metadata": {"format": f.fmt, "size": f.size_label, "fp": f.fp},
                "hashes": dict(v.hashes[f.id]), "primary": f.primary, "downloadUrl": url}

    # -- auth --------------------------------------------------------------------------------

    def _token(self, request: web.Request) -> tuple[str | None, bool]:
        """(token presented, whether it is valid)."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else request.query.get("token")
        return token, token is not None and token in ({self.token} | self.valid_tokens)

    @staticmethod
    def _unauthorized() -> web.Response:
        return json_response({"error": "Unauthorized"}, status=401)

    # -- handlers ----------------------------------------------------------------------------

    @staticmethod
    def _id(request: web.Request) -> int | None:
        raw = request.match_info["id"]
        return int(raw) if raw.isdigit() else None

    async def _get_version(self, request: web.Request) -> web.Response:
        token, valid = self._token(request)
        if token is not None and not valid:
            return self._unauthorized()
        vid = self._id(request)
        if vid is None:
            return json_response({"error": "Invalid id"}, status=400)
        if vid not in self.versions:
            return json_response({"error": f"No model version with id {vid}"}, status=404)
        return json_response(self.version_json(vid))

    async def _get_model(self, request: web.Request) -> web.Response:
        token, valid = self._token(request)
        if token is not None and not valid:
            return self._unauthorized()
        mid = self._id(request)
        if mid is None:
            return json_response({"error": "Invalid id"}, status=400)
        model = self.models.get(mid)
        if model is None:
            return json_response({"error": f"No model with id {mid}"}, status=404)
        return json_response({
            "id": model.model_id, "name": model.name, "description": None, "type": model.type,
            "poi": False, "nsfw": False, "nsfwLevel": 1, "allowNoCredit": True,
            "creator": {"username": "loopback", "image": None}, "tags": [],
            "stats": {"downloadCount": 0}, "mode": None,
            "modelVersions": [self.version_json(v, with_model=False) for v in model.version_ids],
        })

    async def _download(self, request: web.Request) -> web.Response:
        token, valid = self._token(request)
        if token is not None and not valid:
            return self._unauthorized()
        vid = self._id(request)
        version = self.versions.get(vid) if vid is not None else None
        if version is None:
            return json_response({"error": "Model not found"}, status=404)
        if version.login_required and not valid:
            if request.headers.get("Content-Type", "").startswith("application/json"):
                return self._unauthorized()
            return_url = quote(f"/model-versions/{version.version_id}", safe="")
            raise web.HTTPTemporaryRedirect(f"/login?returnUrl={return_url}&reason=download-auth")
        if version.early_access:
            return json_response({"error": "Early Access", "deadline": version.deadline},
                                 status=403)
        chosen = self._pick_file(version, request.query)
        if chosen is None:
            return json_response({"error": "File not found"}, status=404)
        location = self.storage.signed_url(version.storage_paths[chosen.id], expires_in=86400)
        raise web.HTTPTemporaryRedirect(location)

    @staticmethod
    def _pick_file(version: _Version, query) -> CivitaiFile | None:
        if "fileId" in query:
            return next((f for f in version.files if str(f.id) == query["fileId"]), None)
        filters = {k: query[k].lower() for k in ("type", "format", "fp", "size") if k in query}
        if filters:
            def fits(f: CivitaiFile) -> bool:
                have = {"type": f.type, "format": f.fmt, "fp": f.fp or "",
                        "size": f.size_label or ""}
                return all(have[k].lower() == v for k, v in filters.items())
            return next((f for f in version.files if fits(f)), None)
        first = version.files[0] if version.files else None
        return next((f for f in version.files if f.primary), first)

    async def _login_page(self, request: web.Request) -> web.Response:
        return web.Response(text="<!DOCTYPE html><html><body>Sign in to Civitai</body></html>",
                            content_type="text/html")


__all__ = ["CivitaiFile", "CivitaiServer"]
