"""The library: model files under a models root and the registry that describes them.

Everything that looks at or changes installed files lives here: the quick "is this bundle file
already here" check (size + mtime + recorded hash, no reading), recording a download, verifying
(quick: size, mtime, header; deep: re-hash), adopting an existing ComfyUI folder in place, and
removing files without ever deleting one another installed bundle needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..catalogue.model import Bundle, BundleFile
from ..download.hashing import hash_file
from ..download.safe_paths import safe_join
from ..errors import BadFileError, NotFoundError, UsageError
from ..registry.inspect import Inspection, inspect_file
from ..registry.store import Asset, Registry
from .layout import STATE_DIR, is_model_file

SKIP_DIRS = {STATE_DIR, ".modelmgr-quarantine", ".git", "__pycache__"}


@dataclass(frozen=True)
class FileStatus:
    """Where one bundle file stands on disk."""

    file: BundleFile
    path: Path
    state: str
    """present | missing | unverified (a file is there but not known to match) | changed."""
    asset: Asset | None = None


@dataclass
class VerifyReport:
    """Outcome of ``verify`` for each asset, by status."""

    results: list[tuple[Asset, str, str]] = field(default_factory=list)
    """(asset, status, detail) per file."""
    seconds: float = 0.0
    bytes_hashed: int = 0

    @property
    def ok(self) -> bool:
        return all(status == "ok" for _, status, _ in self.results)


@dataclass
class ScanReport:
    """What ``scan`` found."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    gone: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Library:
    """One models root: its files, its registry."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.root)

    def close(self) -> None:
        self.registry.close()

    def path_of(self, relpath: str) -> Path:
        return safe_join(self.root, relpath)

    def relpath_of(self, path: Path) -> str:
        """The registry key of a path under the root; UsageError for a path outside it."""
        resolved = Path(path).expanduser().resolve()
        root = self.root.resolve()
        if resolved != root and root not in resolved.parents:
            raise UsageError(f"{path} is not under the models root {root}",
                             f"pass --root to use another root, or move the files under {root}")
        return resolved.relative_to(root).as_posix()

    # -- bundle state ----------------------------------------------------------------------
    def status(self, bf: BundleFile) -> FileStatus:
        """Is this bundle file here and known-good? Reads no file content."""
        path = self.path_of(bf.relpath)
        asset = self.registry.get(bf.relpath)
        try:
            st = path.stat()
        except FileNotFoundError:
            return FileStatus(bf, path, "missing", asset)
        if asset is None:
            return FileStatus(bf, path, "unverified", None)
        if st.st_size != asset.size or st.st_mtime_ns != asset.mtime_ns:
            return FileStatus(bf, path, "changed", asset)
        if bf.size is not None and st.st_size != bf.size:
            return FileStatus(bf, path, "changed", asset)
        if bf.sha256 is not None:
            state = "present" if asset.sha256 == bf.sha256 else "unverified"
        else:
            state = "present" if asset.source == bf.source.text and asset.sha256 else "unverified"
        return FileStatus(bf, path, state, asset)

    def bundle_status(self, bundle: Bundle) -> list[FileStatus]:
        return [self.status(bf) for bf in bundle.files]

    # -- recording -------------------------------------------------------------------------
    def record(self, relpath: str, *, hashes: dict[str, str], source: str | None,
               revision: str | None, inspection: Inspection | None, managed: bool,
               role: str | None = None) -> Asset:
        """Record a file that is now under the root (after a verified download)."""
        st = self.path_of(relpath).stat()
        return self.registry.upsert(Asset(
            path=relpath, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=hashes.get("sha256"),
            blake3=hashes.get("blake3"), source=source, revision=revision, managed=managed,
            **_inspection_columns(inspection), role=role or (inspection.role if inspection else None),
            verified_at=time.time(), verify_status="ok", verify_detail="verified on download"))

    def record_bundle(self, bundle: Bundle) -> None:
        self.registry.record_bundle(bundle.name, [(f.relpath, f.role) for f in bundle.files],
                                    bundle.origin)

    # -- verify ----------------------------------------------------------------------------
    def verify(self, deep: bool = False, paths: list[str] | None = None) -> VerifyReport:
        """Quick: size, mtime and header of every asset. Deep: also re-hash and compare."""
        started = time.monotonic()
        report = VerifyReport()
        assets = [a for a in self.registry.assets() if paths is None or a.path in paths]
        for asset in assets:
            status, detail, changes = self._verify_one(asset, deep)
            if deep and status in ("ok", "mismatch"):
                report.bytes_hashed += asset.size
            changes.update(verified_at=time.time(), verify_status=status, verify_detail=detail)
            self.registry.update(asset.path, **changes)
            report.results.append((asset, status, detail))
        report.seconds = time.monotonic() - started
        return report

    def _verify_one(self, asset: Asset, deep: bool) -> tuple[str, str, dict]:
        path = self.path_of(asset.path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return "missing", "the file is gone", {}
        if st.st_size != asset.size:
            return "changed", f"size {st.st_size} != recorded {asset.size}", {}
        try:
            ins = inspect_file(path)
        except BadFileError as exc:
            return "bad-header", exc.message, {}
        if ins.unsafe:
            return "unsafe", "pickle file: never loaded, never trusted", {}
        if not deep:
            if st.st_mtime_ns != asset.mtime_ns:
                return "changed", "modified since recorded (run verify --deep)", {}
            return "ok", "size, mtime and header match", {}
        algo, want = ("blake3", asset.blake3) if asset.blake3 and not asset.sha256 else \
            ("sha256", asset.sha256)
        got = hash_file(path, algo)
        fresh = {"mtime_ns": st.st_mtime_ns, **({algo: got} if want is None else {})}
        if want is not None and got != want:
            return "mismatch", f"{algo} {got} != recorded {want}", {}
        return "ok", f"{algo} {'matches' if want else 'recorded'}", fresh

    # -- scan ------------------------------------------------------------------------------
    def scan(self, folder: Path | None = None) -> ScanReport:
        """Adopt the model files under ``folder`` (default: the root) in place, headers only."""
        started = time.monotonic()
        report = ScanReport()
        base = Path(folder) if folder is not None else self.root
        prefix = self.relpath_of(base)
        prefix = "" if prefix == "." else prefix
        seen: set[str] = set()
        for path in _walk(base):
            rel = self.relpath_of(path)
            seen.add(rel)
            st = path.stat()
            known = self.registry.get(rel)
            if known and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns and \
                    known.inspect_error is None and known.inspection is not None:
                report.unchanged += 1
                continue
            try:
                ins, error = inspect_file(path), None
            except BadFileError as exc:
                ins, error = None, exc.message
                report.problems.append((rel, exc.message))
            same = known is not None and known.size == st.st_size
            self.registry.upsert(Asset(
                path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns,
                sha256=known.sha256 if same else None, blake3=known.blake3 if same else None,
                source=known.source if known else None, revision=known.revision if known else None,
                managed=known.managed if known else False, **_inspection_columns(ins),
                role=ins.role if ins else None, inspect_error=error))
            (report.updated if known else report.added).append(rel)
        for asset in self.registry.assets(prefix or None):
            if asset.path not in seen and not self.path_of(asset.path).exists():
                report.gone.append(asset.path)
                if not asset.managed and not self.registry.bundles_using(asset.path):
                    self.registry.remove(asset.path)
        report.seconds = time.monotonic() - started
        return report

    # -- remove ----------------------------------------------------------------------------
    def remove(self, name: str, bundles: dict[str, Bundle]) -> tuple[list[str], list[str]]:
        """Remove an installed bundle or one file; returns (deleted, kept because shared).

        A file another installed bundle needs is never deleted; a file modelmgr did not install
        is never deleted as part of a bundle.
        """
        installed = self.registry.installed_bundles()
        if name in installed:
            deleted, kept = [], []
            for rel in self.registry.bundle_paths(name):
                others = [b for b in self.registry.bundles_using(rel) if b != name]
                asset = self.registry.get(rel)
                if others:
                    kept.append(f"{rel} (used by {', '.join(others)})")
                elif asset is not None and asset.managed:
                    self._delete(rel)
                    deleted.append(rel)
                else:
                    kept.append(f"{rel} (not installed by modelmgr)")
            self.registry.remove_bundle(name)
            return deleted, kept
        if name in bundles:
            raise NotFoundError(f"bundle {name} is not installed here ({self.root})")
        rel = self._resolve_asset_name(name)
        users = self.registry.bundles_using(rel)
        if users:
            raise UsageError(f"{rel} is needed by the installed bundle(s) {', '.join(users)}",
                             f"remove the bundle first: modelmgr rm {users[0]}")
        self._delete(rel)
        return [rel], []

    def _resolve_asset_name(self, name: str) -> str:
        candidate = Path(name).expanduser()
        if candidate.is_absolute() or candidate.exists():
            return self.relpath_of(candidate)
        if self.registry.get(name) is not None:
            return name
        matches = [a.path for a in self.registry.assets() if a.path.rsplit("/", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"{name!r} matches several files: {', '.join(matches)}",
                             "give the path under the models root")
        raise NotFoundError(f"no installed bundle or file named {name!r} under {self.root}",
                            "`modelmgr ls` lists what is installed")

    def _delete(self, rel: str) -> None:
        try:
            self.path_of(rel).unlink()
        except FileNotFoundError:
            pass
        self.registry.remove(rel)


def _inspection_columns(ins: Inspection | None) -> dict:
    if ins is None:
        return {"format": None, "precision": None, "family": None, "inspection": None}
    return {"format": ins.format, "precision": ins.precision, "family": ins.family,
            "inspection": ins.to_dict()}


def _walk(base: Path):
    """Model files under ``base``, skipping modelmgr's own folders and partial downloads."""
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for fname in filenames:
            path = Path(dirpath) / fname
            if is_model_file(path) and path.is_file():
                yield path
