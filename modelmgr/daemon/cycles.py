"""What each reconcile cycle did, kept on the volume for ``modelmgr status``.

One small JSON file per daemon name, ``<root>/.modelmgr/daemon/<name>.json``, holding its last
cycles. A file per name (not a shared table) means machines sharing a volume never write the same
file, so no lock is needed and a record is replaced atomically (write, fsync, rename); ``status``
reads them all. The registry stays the one place that says what is installed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ExitCode
from ..library.layout import STATE_DIR

RECORDS_DIR = "daemon"
KEEP = 50
IN_PLACE = ("in-place", "installed")


@dataclass
class BundleOutcome:
    """One wanted bundle after a cycle."""

    name: str
    state: str
    """in-place (nothing to fetch) | installed (fetched something) | failed | waiting (other
    machines still held its files when the cycle ended) | interrupted."""
    fetched: int = 0
    """Bytes received for it in this cycle."""
    downloaded: list[str] = field(default_factory=list)
    """Files fetched in this cycle."""
    error: dict | None = None
    """The first error (``ModelMgrError.to_dict()``), with ``path`` when it is about one file."""
    fingerprint: str | None = None
    """Identifies the bundle's definition (files, sources, pins), to tell a fixed bundle."""
    held: bool = False
    """Not tried this cycle: the same definition failed its checks before (see reconcile)."""

    @property
    def ok(self) -> bool:
        return self.state in IN_PLACE


@dataclass
class CycleReport:
    """One reconcile cycle."""

    cycle: int
    name: str
    trigger: str
    """start | interval | reload | retry | sync."""
    started: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    finished: float | None = None
    bundles: dict[str, BundleOutcome] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    """Wanted files not in place when the cycle ended."""
    verify: list[dict] = field(default_factory=list)
    """One entry per verification pass: mode, checked, problems [{path, status, detail}]."""
    pruned: list[str] = field(default_factory=list)
    error: dict | None = None
    """A failure of the whole cycle (the root is not mounted, the catalogue is unreadable)."""
    interrupted: bool = False

    def outcome(self, outcome: BundleOutcome) -> None:
        """Record a bundle's outcome; a second pass in the same cycle adds to the first."""
        before = self.bundles.get(outcome.name)
        if before is not None:
            outcome.fetched += before.fetched
            outcome.downloaded = before.downloaded + outcome.downloaded
        self.bundles[outcome.name] = outcome

    @property
    def ok(self) -> bool:
        return (self.error is None and not self.interrupted
                and all(b.ok for b in self.bundles.values()))

    @property
    def fetched(self) -> int:
        return sum(b.fetched for b in self.bundles.values())

    @property
    def failed(self) -> list[BundleOutcome]:
        return [b for b in self.bundles.values() if not b.ok]

    @property
    def exit_code(self) -> int:
        """0 when every wanted bundle is in place; else the first failure's exit code."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        for err in [self.error] + [b.error for b in self.failed]:
            if err is not None:
                return int(err.get("exit_code") or ExitCode.INTERNAL)
        return ExitCode.OK if self.ok else ExitCode.INTERNAL

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["bundles"] = [asdict(b) for b in self.bundles.values()]
        doc.update(ok=self.ok, fetched=self.fetched, exit_code=self.exit_code)
        return doc


class CycleStore:
    """The cycle records of one daemon name under one root."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = records_dir(root)
        self.name = name
        self.path = self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".json")

    def load(self) -> dict:
        return _read(self.path) or {"name": self.name, "deep_verified_at": None, "cycles": []}

    def last_outcomes(self) -> dict[str, dict]:
        """The bundle outcomes of this daemon's last cycle, by bundle name."""
        cycles = self.load()["cycles"]
        return {b["name"]: b for b in cycles[-1].get("bundles", [])} if cycles else {}

    def next_cycle(self) -> int:
        cycles = self.load()["cycles"]
        return cycles[-1]["cycle"] + 1 if cycles else 1

    def append(self, report: CycleReport, *, deep_verified: bool = False) -> None:
        """Add a cycle (keeping the last ``KEEP``), replacing the file atomically."""
        doc = self.load()
        doc["name"] = self.name
        doc["cycles"] = (doc["cycles"] + [report.to_dict()])[-KEEP:]
        if deep_verified:
            doc["deep_verified_at"] = report.finished
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def deep_due(self, every: float, now: float | None = None) -> bool:
        """Is a deep verification due? Any daemon's deep pass on this volume counts; before the
        first one, the clock starts at the first recorded cycle (fresh downloads were hashed)."""
        if every <= 0:
            return False
        now = time.time() if now is None else now
        docs = read_all(self.folder.parent.parent)
        last = max((d.get("deep_verified_at") or 0.0 for d in docs), default=0.0)
        if not last:
            last = min((d["cycles"][0]["started"] for d in docs if d.get("cycles")), default=now)
        return now - last >= every


def records_dir(root: Path) -> Path:
    return Path(root) / STATE_DIR / RECORDS_DIR


def read_all(root: Path) -> list[dict]:
    """Every daemon's record file under a root (unreadable ones are skipped)."""
    folder = records_dir(root)
    if not folder.is_dir():
        return []
    return [doc for doc in (_read(p) for p in sorted(folder.glob("*.json"))) if doc]


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("cycles"), list) else None
