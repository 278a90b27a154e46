"""Hugging Face source: pin a revision to a commit, then list the wanted files with exact sizes and
sha256 -- without downloading anything.

Metadata goes through huggingface_hub (its sync calls run in a worker thread) so that Hub
behaviour we do not want to re-implement -- error codes, pagination, HF_ENDPOINT mirrors -- stays
theirs. Three calls per resolve: ``repo_info`` pins the commit, ``get_paths_info`` gives size and
LFS sha256 for every requested path in one POST, and, only for gated repos, one HEAD on a resolve
URL shows whether our token may download. The resolve URLs we hand out name the commit, never a
branch, so a file cannot change between resolve and download.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from huggingface_hub import HfApi, get_hf_file_metadata
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from ..download.safe_paths import redact_url, safe_relpath
from ..errors import AuthError, ModelMgrError, NotFoundError, RemoteError, UsageError
from ..settings import Settings
from ._retry import RETRY_STATUSES, Retryable, retrying, server_delay
from .base import RemoteFile, origin_of

try:  # huggingface_hub >= 1.0 speaks httpx(2); older releases speak requests (OSError subclasses)
    import httpx2 as _httpx

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (_httpx.TransportError, OSError)
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    try:
        import httpx as _httpx  # type: ignore[no-redef]

        _TRANSPORT_ERRORS = (_httpx.TransportError, OSError)
    except ImportError:
        _TRANSPORT_ERRORS = (OSError,)

REPO_TYPES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
"""Repo type -> URL prefix of its pages and resolve URLs."""
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HfSource:
    """Files of one Hugging Face repo at one revision."""

    def __init__(self, settings: Settings, repo_id: str, filenames: list[str],
                 revision: str | None = None, repo_type: str = "model") -> None:
        if repo_type not in REPO_TYPES:
            raise UsageError(f"unknown Hugging Face repo type {repo_type!r}",
                             "use model, dataset or space")
        if not _REPO_ID.match(repo_id or "") or ".." in repo_id:
            raise UsageError(f"not a Hugging Face repo id: {repo_id!r}", "expected org/name")
        self.settings = settings
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.revision = revision
        self.filenames = list(dict.fromkeys(filenames))
        self.endpoint = settings.hf_endpoint.rstrip("/")
        self._prefix = REPO_TYPES[repo_type]
        self._token: str | None = None

    @property
    def page_url(self) -> str:
        """The repo's page, where gated licences are accepted."""
        return f"{self.endpoint}/{self._prefix}{self.repo_id}"

    @property
    def _shown(self) -> str:
        return f"{self._prefix}{self.repo_id}"

    async def resolve(self) -> list[RemoteFile]:
        """Pin the commit and describe every requested file; raise a ModelMgrError otherwise."""
        if not self.filenames:
            raise UsageError(f"no files named for hf:{self._shown}",
                             "list the files to fetch from the repo")
        paths = list(dict.fromkeys(safe_relpath(name) for name in self.filenames))
        self._token = self.settings.token_for("hf")
        api = HfApi(endpoint=self.endpoint, token=self._token or False)
        timeout = self.settings.connect_timeout
        info = await self._call(api.repo_info, self.repo_id, revision=self.revision,
                                repo_type=self.repo_type, timeout=timeout)
        commit = getattr(info, "sha", None)
        if not commit:
            raise RemoteError(f"{redact_url(self.endpoint)} named no commit for "
                              f"{self._shown}@{self.revision or 'main'}",
                              "is HF_ENDPOINT a Hugging Face Hub (or a mirror of one)?")
        items = await self._call(api.get_paths_info, self.repo_id, paths, revision=commit,
                                 repo_type=self.repo_type)
        found = {item.path: item for item in items}
        missing = [p for p in paths if not isinstance(found.get(p), RepoFile)]
        if missing:
            raise await self._missing_error(api, commit, missing, found)
        if getattr(info, "gated", False):
            await self._call(get_hf_file_metadata, self._resolve_url(commit, paths[0]),
                             token=self._token or False, timeout=timeout)
        return [self._remote_file(found[p], commit) for p in paths]

    def _resolve_url(self, commit: str, path: str) -> str:
        return f"{self.endpoint}/{self._prefix}{self.repo_id}/resolve/{commit}/{quote(path)}"

    def _remote_file(self, item: RepoFile, commit: str) -> RemoteFile:
        lfs = item.lfs
        return RemoteFile(
            url=self._resolve_url(commit, item.path),
            name=safe_relpath(item.path),
            source=f"hf:{self._shown}@{commit}/{item.path}",
            size=lfs.size if lfs else item.size,
            sha256=lfs.sha256.lower() if lfs else None,
            etag=lfs.sha256.lower() if lfs else item.blob_id,
            revision=commit,
            credential="hf",
            auth_origin=origin_of(self.endpoint),
        )

    async def _missing_error(self, api: HfApi, commit: str, missing: list[str],
                             found: dict[str, Any]) -> NotFoundError:
        """NotFoundError naming the missing paths and the closest names the repo does have."""
        where = f"hf:{self._shown}@{self.revision or commit[:12]}"
        folders = [p for p in missing if isinstance(found.get(p), RepoFolder)]
        try:
            names = await self._call(api.list_repo_files, self.repo_id, revision=commit,
                                     repo_type=self.repo_type, retry=False)
        except ModelMgrError:
            names = []  # suggestions are a courtesy; the missing file is the error
        if folders:
            inside = [n for n in names if n.startswith(folders[0] + "/")][:3]
            return NotFoundError(f"{folders[0]} is a folder in {where}, not a file",
                                 "name the files inside it" + (f", e.g. {', '.join(inside)}"
                                                               if inside else ""))
        hints = []
        for path in missing:
            base = path.rsplit("/", 1)[-1]
            close = [n for n in names if n.rsplit("/", 1)[-1] == base and n != path] \
                or difflib.get_close_matches(path, names, n=3, cutoff=0.75)
            if close:
                hints.append(f"{path} -> did you mean {', '.join(close[:3])}?")
        hint = "; ".join(hints) if hints else f"see the file list at {self.page_url}/tree/{commit}"
        noun = "file" if len(missing) == 1 else f"{len(missing)} files"
        return NotFoundError(f"{noun} not found in {where}: {', '.join(missing)}", hint)

    async def _call(self, fn: Callable[..., Any], *args: Any, retry: bool = True,
                    **kwargs: Any) -> Any:
        """Run a sync huggingface_hub call in a thread, with retries, as a ModelMgrError."""
        guard = self.settings.connect_timeout * 3  # a whole call, pagination included

        async def attempt() -> Any:
            try:
                return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), guard)
            except HfHubHTTPError as exc:
                error = self._translate(exc)
                status = exc.response.status_code if exc.response is not None else 0
                if retry and status in RETRY_STATUSES:
                    raise Retryable(error, server_delay(exc.response.headers)) from None
                raise error from None
            except OfflineModeIsEnabled:
                raise RemoteError("HF_HUB_OFFLINE is set, so the Hub cannot be asked about "
                                  f"hf:{self._shown}", "unset HF_HUB_OFFLINE") from None
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                error = RemoteError(f"cannot reach {redact_url(self.endpoint)}: "
                                    f"{type(exc).__name__}",
                                    "check the network, proxy settings and HF_ENDPOINT")
                if retry:
                    raise Retryable(error) from None
                raise error from None

        return await retrying(self.settings, attempt)

    def _translate(self, exc: HfHubHTTPError) -> ModelMgrError:
        """Map a huggingface_hub HTTP error to one of ours; tokens never appear in messages."""
        has_token = bool(self._token)
        repo = f"hf:{self._shown}"
        if isinstance(exc, GatedRepoError):
            if has_token:
                return AuthError(f"your Hugging Face token has no access to the gated repo {repo}",
                                 f"accept the licence at {self.page_url} with the account the "
                                 "token belongs to (some repos also need the author's approval)")
            return AuthError(f"{repo} is gated: downloading needs an accepted licence and a token",
                             f"accept the licence at {self.page_url}, then set HF_TOKEN "
                             "(or run `hf auth login`)")
        if isinstance(exc, (RepositoryNotFoundError, DisabledRepoError)):
            hint = "check the repo id (org/name) and the repo type"
            hint += ("; a private repo looks missing without a token: set HF_TOKEN"
                     if not has_token else "; if it is private, check that your token can read it")
            return NotFoundError(f"{repo} not found at {redact_url(self.endpoint)}", hint)
        if isinstance(exc, RevisionNotFoundError):
            return NotFoundError(f"revision {self.revision or 'main'!r} not found in {repo}",
                                 f"use a branch, a tag or a full commit sha "
                                 f"(see {self.page_url}/tree/main)")
        if isinstance(exc, RemoteEntryNotFoundError):
            return NotFoundError(f"file not found in {repo}", f"see {self.page_url}/tree/main")
        status = exc.response.status_code if exc.response is not None else 0
        url = redact_url(str(exc.response.request.url)) if exc.response is not None \
            else self.endpoint
        if status == 401:
            if has_token:
                return AuthError("Hugging Face rejected the token (HF_TOKEN or the stored login)",
                                 "set HF_TOKEN to a valid read token")
            return AuthError(f"Hugging Face wants a token for {repo}", "set HF_TOKEN")
        if status == 403:
            return AuthError(f"Hugging Face refused access to {repo} (HTTP 403)",
                             "check your token's permissions (a fine-grained token needs read "
                             "access to this repo)")
        if status == 429:
            wait = server_delay(exc.response.headers)
            after = f"; the Hub asks to wait {wait:.0f} s" if wait is not None else ""
            return RemoteError(f"Hugging Face rate limit reached{after}",
                               "retry later" if has_token else
                               "retry later; logged-in users get higher limits (set HF_TOKEN)")
        return RemoteError(f"Hugging Face answered HTTP {status} for {url}",
                           "the Hub or the mirror may be having trouble; retry later")


__all__ = ["REPO_TYPES", "HfSource"]
