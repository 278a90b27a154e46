"""Installing a bundle: plan, resolve, check pins, pull everything at once, inspect, record.

Files already present (registry says so from size + mtime + recorded hash) cost nothing: a
re-pull of an installed bundle touches no network and reads no file. Files shared between bundles
have the same path under the root, so they are fetched once and recorded for every bundle.
Each downloaded file's header is inspected *before* it is renamed into place; a file that is not
the format (or family) the bundle declares is quarantined and reported, naming both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..catalogue.model import Bundle, BundleFile
from ..download.engine import Engine, FileJob, FileResult, check_free_space
from ..download.progress import ProgressHub
from ..errors import IntegrityError, ModelMgrError
from ..registry.inspect import Inspection, check_declared, inspect_file
from ..settings import Settings
from ..sources.base import RemoteFile
from .library import FileStatus, Library


@dataclass
class FileOutcome:
    """One bundle file after an install (or in a dry-run plan)."""

    relpath: str
    role: str
    state: str
    """present | downloaded | planned | failed"""
    size: int | None = None
    fetched: int = 0
    error: ModelMgrError | None = None

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "error"}
        out["error"] = self.error.to_dict() if self.error else None
        return out


@dataclass
class InstallReport:
    """What ``pull bundle`` did."""

    bundle: str
    root: str
    files: list[FileOutcome] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.error is None for f in self.files)

    @property
    def nothing_to_do(self) -> bool:
        return all(f.state == "present" for f in self.files)

    @property
    def to_fetch(self) -> int:
        return sum(f.size or 0 for f in self.files if f.state in ("planned", "downloaded"))

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "root": self.root, "ok": self.ok, "dry_run": self.dry_run,
                "nothing_to_do": self.nothing_to_do, "seconds": round(self.seconds, 3),
                "files": [f.to_dict() for f in self.files]}


async def install_bundle(settings: Settings, library: Library, bundle: Bundle,
                         progress: ProgressHub, *, dry_run: bool = False) -> InstallReport:
    started = time.monotonic()
    report = InstallReport(bundle.name, str(library.root), dry_run=dry_run)
    statuses = library.bundle_status(bundle)
    todo = [s for s in statuses if s.state != "present"]
    if not todo:
        library.record_bundle(bundle)
        report.files = [FileOutcome(s.file.relpath, s.file.role, "present", s.asset.size)
                        for s in statuses if s.asset]
        report.seconds = time.monotonic() - started
        return report
    remotes = await resolve_bundle_files(settings, [s.file for s in todo])
    jobs = [FileJob(remote, library.root, check=_declared_check(st.file))
            for st, remote in zip(todo, remotes)]
    outcomes = {s.file.relpath: FileOutcome(s.file.relpath, s.file.role, "present",
                                            s.asset.size if s.asset else None)
                for s in statuses if s.state == "present"}
    if dry_run:
        check_free_space(jobs)  # a real pull checks it in the engine, for all files at once
        for st, remote in zip(todo, remotes):
            outcomes[st.file.relpath] = FileOutcome(st.file.relpath, st.file.role, "planned",
                                                    remote.size)
    else:
        results = await Engine(settings, progress).pull(jobs)
        for st, result in zip(todo, results):
            outcomes[st.file.relpath] = _record(library, st, result)
        if all(o.error is None for o in outcomes.values()):
            library.record_bundle(bundle)
    report.files = [outcomes[f.relpath] for f in bundle.files]
    report.seconds = time.monotonic() - started
    return report


def _record(library: Library, st: FileStatus, result: FileResult) -> FileOutcome:
    bf = st.file
    if result.error is not None:
        return FileOutcome(bf.relpath, bf.role, "failed", result.size, result.fetched,
                           result.error)
    inspection: Inspection | None = result.checked
    library.record(bf.relpath, hashes=result.hashes, source=bf.source.text,
                   revision=result.revision, inspection=inspection, managed=True, role=bf.role)
    state = "present" if result.status == "present" else "downloaded"
    return FileOutcome(bf.relpath, bf.role, state, result.size, result.fetched)


def _declared_check(bf: BundleFile):
    def check(path: Path) -> Inspection:
        ins = inspect_file(path)
        check_declared(ins, bf.format, bf.family)
        return ins

    return check


async def resolve_bundle_files(settings: Settings, files: list[BundleFile]) -> list[RemoteFile]:
    """Resolve every file (HF files of one repo and revision in one call), placed at its
    ComfyUI path and pinned to the bundle's sha256/size where the bundle gives them."""
    from ..sources.civitai import CivitaiSource
    from ..sources.hf import HfSource
    from ..sources.url import UrlSource

    resolved: dict[str, RemoteFile] = {}
    groups: dict[tuple, list[BundleFile]] = {}
    for bf in files:
        if bf.source.kind == "hf":
            key = (bf.source.repo_type, bf.source.repo_id, bf.source.revision)
            groups.setdefault(key, []).append(bf)
    for (repo_type, repo_id, revision), members in groups.items():
        remotes = await HfSource(settings, repo_id, [m.source.path for m in members], revision,
                                 repo_type).resolve()
        for bf, remote in zip(members, remotes):
            resolved[bf.relpath] = remote
    for bf in files:
        if bf.source.kind == "civitai":
            [resolved[bf.relpath]] = await CivitaiSource(
                settings, str(bf.source.version_id), bf.source.file_id).resolve()
        elif bf.source.kind == "url":
            [resolved[bf.relpath]] = await UrlSource(settings, bf.source.url, sha256=bf.sha256,
                                                     name=bf.filename).resolve()
    return [_pin(bf, resolved[bf.relpath]) for bf in files]


def _pin(bf: BundleFile, remote: RemoteFile) -> RemoteFile:
    """Place the file at its bundle path and hold the source to the bundle's pins."""
    if bf.sha256 and remote.sha256 and remote.sha256 != bf.sha256:
        raise IntegrityError(f"{bf.relpath}: the bundle pins sha256 {bf.sha256} but "
                             f"{bf.source.text} now has {remote.sha256}",
                             "the file changed upstream; update the bundle's pin")
    if bf.size and remote.size and remote.size_is_exact and remote.size != bf.size:
        raise IntegrityError(f"{bf.relpath}: the bundle says {bf.size} bytes but "
                             f"{bf.source.text} has {remote.size}",
                             "the file changed upstream; update the bundle")
    changes: dict = {"name": bf.relpath, "source": bf.source.text}
    if bf.sha256:
        changes["sha256"] = bf.sha256
    if bf.size and not remote.size_is_exact:
        changes.update(size=bf.size, size_is_exact=True)
    return replace(remote, **changes)
