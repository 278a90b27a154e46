"""``HubServer``: enough of the Hugging Face Hub for huggingface_hub and for a plain HTTP client.

Speaks what ``HfApi(endpoint=...)`` (``model_info``/``repo_info``, ``get_paths_info``,
``list_repo_tree``/``list_repo_files``) and ``hf_hub_download(..., endpoint=...)`` use, with the
headers and JSON shapes of huggingface_hub 2.x (``hf_raise_for_status`` keys its exceptions on
``X-Error-Code``; ``get_hf_file_metadata`` needs ``X-Repo-Commit`` and prefers ``X-Linked-Etag``).

LFS files (>= ``lfs_threshold`` bytes) resolve with a 302 to a presigned URL on a separate
``RangeServer`` (``hub.cdn``, another origin, like cas-bridge.xethub.hf.co); small files are regular
git files served by the Hub itself. Access rules follow the real Hub: unknown and private repos
look the same (``RepoNotFound``), gated repos list their files publicly but refuse downloads
(``GatedRepo``, 401 without a token, 403 with a token that was not granted), and an unknown token
gets "Invalid credentials in Authorization header".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import web

from .base import LoopbackServer, json_response
from .ranges import Blob, Entity, RangeServer, send_entity

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_RESOLVE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_BASE_DATE = datetime(2025, 1, 1, tzinfo=UTC)


def _hub_date(when: datetime) -> str:
    """The Hub's timestamp format (``2025-01-01T00:00:00.000Z``)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def git_blob_oid(data: bytes) -> str:
    """The git blob id (sha1 of ``blob <len>\\0`` + data): a regular file's ETag on the Hub."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores instead of an LFS file."""
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
            .encode())


@dataclass
class HubFile:
    """One file in one commit."""

    path: str
    blob: Blob
    git_oid: str
    """Blob id of the file (regular) or of its LFS pointer."""
    sha256: str | None = None
    """LFS oid; None for regular git files."""
    pointer_size: int | None = None

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    def tree_item(self) -> dict:
        item: dict = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.sha256 is not None:
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return item


@dataclass
class Commit:
    sha: str
    files: dict[str, HubFile]
    title: str
    date: str

    def directories(self) -> set[str]:
        dirs = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return dirs


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str
    gated: bool | str
    private_token: str | None
    granted: set[str]
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


def _hub_error(status: int, code: str | None, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
    hdrs = dict(headers or {})
    if code:
        hdrs["X-Error-Code"] = code
    hdrs["X-Error-Message"] = message
    return json_response({"error": message}, status=status, headers=hdrs)


class HubServer(LoopbackServer):
    """A Hub on 127.0.0.1 with its LFS CDN (``hub.cdn``) on a second port.

    ``token`` is a valid user token that is granted every gated repo by default; add more valid
    (but not granted) tokens to ``valid_tokens``.
    """

    def __init__(self, *, token: str = "hf_loopback_token", page_size: int = 50,
                 cdn: RangeServer | None = None) -> None:
        super().__init__()
        self.token = token
        self.valid_tokens: set[str] = {token}
        self.page_size = page_size
        self.cdn = cdn or RangeServer(reject_auth=True, require_signature=True)
        self.children.append(self.cdn)
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self._commit_count = 0

    @property
    def endpoint(self) -> str:
        """What to pass as ``endpoint=`` / ``HF_ENDPOINT``."""
        return self.base_url

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # -- content -----------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], *,
                 revision_name: str = "main", gated: bool | str = False,
                 private_token: str | None = None, lfs_threshold: int = 1024,
                 repo_type: str = "model", granted_tokens: set[str] | None = None) -> str:
        """Create a repo with one commit on ``revision_name``; returns the commit sha.

        ``gated``: False, True/"auto" or "manual". ``granted_tokens``: tokens that accepted the
        licence (default: ``self.token``). ``private_token``: the repo is private and only this
        token sees it.
        """
        key = (repo_type, repo_id)
        if key in self.repos:
            raise ValueError(f"repo {repo_id} exists; use add_commit")
        granted = set(granted_tokens) if granted_tokens is not None else {self.token}
        self.repos[key] = HubRepo(repo_id, repo_type, "auto" if gated is True else gated,
                                  private_token, granted)
        return self.add_commit(repo_id, files, revision_name=revision_name,
                               lfs_threshold=lfs_threshold, repo_type=repo_type)

    def add_commit(self, repo_id: str, files: dict[str, bytes | Path], *,
                   revision_name: str = "main", delete: tuple[str, ...] = (),
                   lfs_threshold: int = 1024, repo_type: str = "model",
                   title: str | None = None) -> str:
        """Commit changed/added ``files`` (and ``delete``) on top of ``revision_name``'s head;
        the ref moves, older commits stay resolvable by sha. Returns the new commit sha."""
        repo = self.repos[(repo_type, repo_id)]
        parent = repo.commits.get(repo.refs.get(revision_name) or repo.refs.get("main", ""), None)
        tree = dict(parent.files) if parent else {}
        for path in delete:
            tree.pop(path, None)
        for path, data in files.items():
            tree[path] = self._make_file(repo_id, path, data, lfs_threshold)
        self._commit_count += 1
        seed = f"{repo_type}/{repo_id}/{self._commit_count}/" + ",".join(
            f"{p}:{f.git_oid}" for p, f in sorted(tree.items()))
        sha = hashlib.sha1(seed.encode()).hexdigest()
        date = _hub_date(_BASE_DATE + timedelta(minutes=self._commit_count))
        repo.commits[sha] = Commit(sha, tree, title or f"Commit {self._commit_count}", date)
        repo.refs[revision_name] = sha
        return sha

    def add_ref(self, repo_id: str, name: str, sha: str, *, repo_type: str = "model") -> None:
        """Point a branch/tag name (e.g. ``v1.0`` or ``refs/pr/1``) at a commit."""
        self.repos[(repo_type, repo_id)].refs[name] = sha

    def file(self, repo_id: str, path: str, revision: str = "main", *,
             repo_type: str = "model") -> HubFile:
        """A file as served at ``revision`` (for expected sizes/hashes in tests)."""
        repo = self.repos[(repo_type, repo_id)]
        return repo.commits[repo.refs.get(revision, revision)].files[path]

    def resolve_url(self, repo_id: str, path: str, revision: str = "main", *,
                    repo_type: str = "model") -> str:
        """``{endpoint}/{prefix}{repo}/resolve/{revision}/{path}``."""
        return (f"{self.base_url}/{_RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/"
                f"{quote(revision, safe='')}/{quote(path)}")

    def _make_file(self, repo_id: str, path: str, data: bytes | Path, threshold: int) -> HubFile:
        blob = Blob(data)
        if blob.size < threshold:
            raw = blob.read(None, 0, blob.size) if blob.path is None else blob.path.read_bytes()
            return HubFile(path, blob, git_blob_oid(bytes(raw)))
        sha256 = blob.digest("sha256")
        pointer = lfs_pointer(sha256, blob.size)
        cdn_path = self._cdn_path(repo_id, sha256)
        try:
            self.cdn.entity(cdn_path)
        except KeyError:
            self.cdn.add_file(cdn_path, data, etag=f'"{sha256}"')
        return HubFile(path, blob, git_blob_oid(pointer), sha256, len(pointer))

    @staticmethod
    def _cdn_path(repo_id: str, sha256: str) -> str:
        return f"/xet-bridge-us/{repo_id}/{sha256}"

    # -- access ------------------------------------------------------------------------------

    def _valid_tokens(self) -> set[str]:
        tokens = set(self.valid_tokens)
        for repo in self.repos.values():
            tokens |= repo.granted
            if repo.private_token:
                tokens.add(repo.private_token)
        return tokens

    def _check_access(self, request: web.Request, repo: HubRepo | None, repo_id: str,
                      for_download: bool) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        if token is not None and token not in self._valid_tokens():
            return _hub_error(401, None, "Invalid credentials in Authorization header")
        if repo is None or (repo.private_token is not None and token != repo.private_token):
            return _hub_error(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if for_download and repo.gated and token not in repo.granted:
            kind = repo.repo_type
            if token is None:
                message = (f"Access to {kind} {repo_id} is restricted. You must have access to it "
                           "and be authenticated to access it. Please log in.")
                return _hub_error(401, "GatedRepo", message)
            message = (f"Access to {kind} {repo_id} is restricted and you are not in the "
                       f"authorized list. Visit {self.base_url}/{repo_id} to ask for access.")
            return _hub_error(403, "GatedRepo", message)
        return None

    @staticmethod
    def _commit_for(repo: HubRepo, revision: str) -> Commit | None:
        sha = repo.refs.get(revision, revision)
        return repo.commits.get(sha)

    def _find_repo(self, repo_type: str, segs: list[str]) -> tuple[HubRepo | None, str, int]:
        """Split ``segs`` into a repo id (``org/name`` or legacy ``name``) and the rest."""
        for n in (2, 1):
            repo_id = "/".join(segs[:n])
            if len(segs) >= n and (repo_type, repo_id) in self.repos:
                return self.repos[(repo_type, repo_id)], repo_id, n
        n = 2 if len(segs) >= 2 else 1
        return None, "/".join(segs[:n]), n

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [unquote(s) for s in request.rel_url.raw_path.split("/")[1:]]
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in _TYPES:
            return await self._api(request, _TYPES[segs[1]], segs[2:])
        if "resolve" in segs[1:] and request.method in ("GET", "HEAD"):
            repo_type = "model"
            if segs[0] in ("datasets", "spaces"):
                repo_type, segs = _TYPES[segs[0]], segs[1:]
            at = segs.index("resolve")
            if at >= 1 and len(segs) > at + 2:
                repo = self.repos.get((repo_type, "/".join(segs[:at])))
                return await self._resolve(request, repo, "/".join(segs[:at]), segs[at + 1],
                                           "/".join(segs[at + 2:]))
        return json_response({"error": "Sorry, we can't find the page you are looking for."},
                             status=404)

    async def _api(self, request: web.Request, repo_type: str,
                   segs: list[str]) -> web.StreamResponse:
        repo, repo_id, n = self._find_repo(repo_type, segs)
        rest = segs[n:]
        denied = self._check_access(request, repo, repo_id, for_download=False)
        if denied is not None:
            return denied
        assert repo is not None
        if not rest and request.method == "GET":
            return self._info(request, repo, "main")
        if len(rest) == 2 and rest[0] == "revision" and request.method == "GET":
            return self._info(request, repo, rest[1])
        if len(rest) >= 2 and rest[0] == "tree" and request.method == "GET":
            return self._tree(request, repo, rest[1], "/".join(rest[2:]).strip("/"))
        if len(rest) == 2 and rest[0] == "paths-info" and request.method == "POST":
            return await self._paths_info(request, repo, rest[1])
        return json_response({"error": "Not Found"}, status=404)

    def _revision_error(self, revision: str) -> web.Response:
        return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _info(self, request: web.Request, repo: HubRepo, revision: str) -> web.Response:
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._revision_error(revision)
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            sib: dict = {"rfilename": f.path}
            if blobs:
                sib.update(size=f.size, blobId=f.git_oid)
                if f.sha256 is not None:
                    sib["lfs"] = {"sha256": f.sha256, "size": f.size,
                                  "pointerSize": f.pointer_size}
            siblings.append(sib)
        return json_response({
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha, "lastModified": commit.date, "createdAt": _hub_date(_BASE_DATE),
            "private": repo.private_token is not None, "gated": repo.gated, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "library_name": "diffusers",
            "siblings": siblings, "usedStorage": sum(f.size for f in commit.files.values()),
        })

    def _item(self, commit: Commit, path: str, expand: bool) -> dict | None:
        f = commit.files.get(path)
        if f is not None:
            item = f.tree_item()
            if expand:
                item["securityFileStatus"] = {"status": "safe", "avScan": {
                    "virusFound": False, "virusNames": None}, "pickleImportScan": None}
        elif path in commit.directories():
            item = {"type": "directory", "path": path,
                    "oid": hashlib.sha1(f"tree:{commit.sha}:{path}".encode()).hexdigest()}
        else:
            return None
        if expand:
            item["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return item

    def _tree(self, request: web.Request, repo: HubRepo, revision: str,
              path: str) -> web.Response:
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._revision_error(revision)
        dirs = commit.directories()
        if path and path not in dirs:
            return _hub_error(404, "EntryNotFound",
                              f"{path} does not exist on \"{revision}\"",
                              {"X-Repo-Commit": commit.sha})
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        expand = request.query.get("expand", "").lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        names = sorted(p for p in (*dirs, *commit.files) if p.startswith(prefix)
                       and (recursive or "/" not in p[len(prefix):]))
        try:
            start = max(int(request.query.get("cursor", "0")), 0)
        except ValueError:
            return json_response({"error": "Invalid cursor"}, status=400)
        page = names[start:start + self.page_size]
        headers = {"X-Repo-Commit": commit.sha}
        if start + self.page_size < len(names):
            next_url = request.url.update_query(cursor=str(start + self.page_size))
            headers["Link"] = f'<{next_url}>; rel="next"'
        return json_response([self._item(commit, p, expand) for p in page], headers=headers)

    async def _paths_info(self, request: web.Request, repo: HubRepo,
                          revision: str) -> web.Response:
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._revision_error(revision)
        form = await request.post()
        expand = str(form.get("expand", "")).lower() in ("1", "true")
        items = [self._item(commit, str(p).strip("/"), expand) for p in form.getall("paths", [])]
        return json_response([i for i in items if i is not None],
                             headers={"X-Repo-Commit": commit.sha})

    async def _resolve(self, request: web.Request, repo: HubRepo | None, repo_id: str,
                       revision: str, path: str) -> web.StreamResponse:
        denied = self._check_access(request, repo, repo_id, for_download=True)
        if denied is not None:
            return denied
        assert repo is not None
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._revision_error(revision)
        f = commit.files.get(path)
        if f is None:
            return _hub_error(404, "EntryNotFound", "Entry not found",
                              {"X-Repo-Commit": commit.sha})
        name = path.rsplit("/", 1)[-1]
        disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
        headers = {"X-Repo-Commit": commit.sha, "Content-Disposition": disposition,
                   "Accept-Ranges": "bytes"}
        if f.sha256 is not None:
            location = self.cdn.signed_url(self._cdn_path(repo.repo_id, f.sha256),
                                           content_disposition=disposition)
            headers.update({"Location": location, "ETag": f'"{f.git_oid}"',
                            "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
            return web.Response(status=302, headers=headers)
        ent = Entity(f.blob, f'"{f.git_oid}"', "Wed, 01 Jan 2025 00:00:00 GMT")
        return await send_entity(request, ent, extra_headers=headers)


__all__ = ["Commit", "HubFile", "HubRepo", "HubServer", "git_blob_oid", "lfs_pointer"]
