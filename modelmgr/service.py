"""ModelManager: the one façade every front end (CLI, TUI, daemon) calls.

Front ends never open sockets, build paths under the models root or parse headers themselves;
they call these methods (async) and render what comes back.
"""

from __future__ import annotations

from pathlib import Path

from .download.engine import Engine, FileJob, FileResult
from .download.progress import ProgressHub
from .settings import Settings
from .sources.base import RemoteFile


class ModelManager:
    """Resolves sources and pulls files with the engine, under one set of settings."""

    def __init__(self, settings: Settings, progress: ProgressHub | None = None) -> None:
        self.settings = settings
        self.progress = progress or ProgressHub()

    # -- resolve (never downloads) ----------------------------------------------------------
    async def resolve_hf(self, repo_id: str, filenames: list[str], revision: str | None = None,
                         repo_type: str = "model") -> list[RemoteFile]:
        from .sources.hf import HfSource

        return await HfSource(self.settings, repo_id, filenames, revision, repo_type).resolve()

    async def resolve_civitai(self, ref: str, file_id: int | None = None) -> list[RemoteFile]:
        from .sources.civitai import CivitaiSource

        return await CivitaiSource(self.settings, ref, file_id).resolve()

    async def resolve_url(self, url: str, *, sha256: str | None = None, blake3: str | None = None,
                          name: str | None = None) -> list[RemoteFile]:
        from .sources.url import UrlSource

        return await UrlSource(self.settings, url, sha256=sha256, blake3=blake3,
                               name=name).resolve()

    # -- pull ------------------------------------------------------------------------------
    async def pull(self, remotes: list[RemoteFile], dest: Path, *,
                   hash_always: bool = True) -> list[FileResult]:
        """Download resolved files into ``dest``; one result per file (errors inside)."""
        for remote in remotes:
            self.progress.file(remote.name).total = remote.size
        engine = Engine(self.settings, self.progress, hash_always=hash_always)
        return await engine.pull([FileJob(remote, Path(dest)) for remote in remotes])
