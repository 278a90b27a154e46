"""ModelManager: the one façade every front end (CLI, TUI, daemon) calls.

Front ends never open sockets, build paths under the models root or parse headers themselves;
they call these methods and render what comes back. Network work is async; registry and header
work is plain (fast, local) and may be called from a worker thread.
"""

from __future__ import annotations

from pathlib import Path

from .catalogue.catalogue import Catalogue
from .catalogue.model import Bundle
from .download.engine import Engine, FileJob, FileResult
from .download.progress import ProgressHub
from .errors import NotFoundError, UsageError
from .library.install import InstallReport, install_bundle
from .library.layout import extra_model_paths_yaml
from .library.library import FileStatus, Library, ScanReport, VerifyReport
from .registry.inspect import Inspection, inspect_file
from .registry.store import Asset
from .settings import Settings
from .sources.base import RemoteFile


class ModelManager:
    """Resolves sources, pulls files and bundles, and manages the library under one root."""

    def __init__(self, settings: Settings, progress: ProgressHub | None = None) -> None:
        self.settings = settings
        self.progress = progress or ProgressHub()
        self._catalogue: Catalogue | None = None
        self._library: Library | None = None

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self._catalogue = Catalogue.load(self.settings)
        return self._catalogue

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library(self.root)
        return self._library

    def close(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None

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

    async def install_bundle(self, name: str, *, dry_run: bool = False) -> InstallReport:
        """Put a bundle's files under the root, verified and inspected, and record it."""
        bundle = self.catalogue.get(name)
        return await install_bundle(self.settings, self.library, bundle, self.progress,
                                    dry_run=dry_run)

    # -- catalogue -------------------------------------------------------------------------
    def bundles(self, installed_only: bool = False) -> list[tuple[Bundle, bool]]:
        """(bundle, installed) for every bundle in the catalogue."""
        installed = self.library.registry.installed_bundles()
        rows = [(b, b.name in installed) for b in self.catalogue.all()]
        return [r for r in rows if r[1]] if installed_only else rows

    def bundle_status(self, name: str) -> tuple[Bundle, list[FileStatus], bool]:
        """A bundle, where each of its files stands, and whether it is recorded as installed."""
        bundle = self.catalogue.get(name)
        installed = name in self.library.registry.installed_bundles()
        return bundle, self.library.bundle_status(bundle), installed

    # -- library ---------------------------------------------------------------------------
    def assets(self) -> list[tuple[Asset, list[str]]]:
        """Every recorded asset with the installed bundles that use it."""
        users = self.library.registry.bundles_of_all()
        return [(a, users.get(a.path, [])) for a in self.library.registry.assets()]

    def inspect(self, target: str) -> list[tuple[str, Inspection]]:
        """Inspect a file path, a recorded asset, or every file of a bundle (headers only)."""
        path = Path(target).expanduser()
        if path.is_file():
            return [(str(path), inspect_file(path))]
        registry = self.library.registry
        if registry.get(target) is not None:
            return [(target, inspect_file(self.library.path_of(target)))]
        if target in self.catalogue.bundles:
            present = [s for s in self.library.bundle_status(self.catalogue.get(target))
                       if s.state != "missing"]
            if not present:
                raise NotFoundError(f"none of {target}'s files are under {self.root}",
                                    f"modelmgr pull bundle {target}")
            return [(s.file.relpath, inspect_file(s.path)) for s in present]
        raise NotFoundError(f"{target!r} is not a file, a recorded asset or a bundle",
                            "give a path, or see `modelmgr ls` / `modelmgr bundles list`")

    def verify(self, deep: bool = False) -> VerifyReport:
        return self.library.verify(deep)

    def scan(self, folder: Path | None = None) -> ScanReport:
        if folder is not None and not Path(folder).is_dir():  # before the root is created
            raise UsageError(f"{folder} is not a folder", "give the ComfyUI models folder to adopt")
        return self.library.scan(folder)

    def remove(self, name: str) -> tuple[list[str], list[str]]:
        return self.library.remove(name, self.catalogue.bundles)

    def extra_model_paths(self) -> str:
        return extra_model_paths_yaml(self.root)

    # -- GPU smoke test (torch and diffusers are imported inside, never at module import) -------
    def smoke(self, target: str, *, device: str | None = "cuda", steps: int | None = None,
              width: int | None = None, height: int | None = None, text_encoder: bool = False,
              prompt: str | None = None, tokenizers: tuple[Path, ...] = ()):
        """Load a bundle's (or a file's) diffusion model on the GPU, run a short generation and
        record load time, it/s, peak VRAM and the verdict in the registry.

        ``device="cuda"`` refuses to run without a GPU (a CPU run of a real model would take
        hours); the CLI passes ``None`` for "the GPU if there is one, else the CPU".
        ``text_encoder`` / ``prompt`` condition on the bundle's text encoder(s) instead of the
        seeded embedding (``tokenizers``: folders to read tokenizers from).
        """
        from .smoke import api
        from .smoke.runner import Options

        options = Options(width=width, height=height, steps=steps, text_encoder=text_encoder, prompt=prompt,
                          tokenizers=tuple(Path(t) for t in tokenizers))
        result, _ = api.smoke(self, target, options, api.device_info(device))
        return result
