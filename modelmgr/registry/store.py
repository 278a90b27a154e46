"""The registry: one SQLite database in the models root, ``.modelmgr/registry.sqlite``.

It records every asset modelmgr knows under the root (path, size, mtime, hashes, where it came
from, what the inspector found, the last verification, smoke results) and which installed bundles
use which files. WAL lets the CLI, the TUI and the daemon read while one of them writes; writers
wait on ``busy_timeout`` instead of failing, and every change is one short transaction. On a
network filesystem (a cloud volume several machines mount) WAL cannot work, so the database uses
a rollback journal there, which relies on the filesystem's byte-range locks.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelMgrError
from ..library.layout import STATE_DIR
from ..library.mounts import is_network_fs

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    blake3 TEXT,
    source TEXT,
    revision TEXT,
    managed INTEGER NOT NULL DEFAULT 0,
    format TEXT,
    precision TEXT,
    family TEXT,
    role TEXT,
    inspection TEXT,
    inspect_error TEXT,
    verified_at REAL,
    verify_status TEXT,
    verify_detail TEXT,
    smoke TEXT,
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT PRIMARY KEY,
    installed_at REAL NOT NULL,
    origin TEXT
);
CREATE TABLE IF NOT EXISTS bundle_files (
    bundle TEXT NOT NULL,
    path TEXT NOT NULL,
    role TEXT,
    PRIMARY KEY (bundle, path)
);
CREATE INDEX IF NOT EXISTS bundle_files_path ON bundle_files(path);
"""


@dataclass(frozen=True)
class Asset:
    """One file under the models root, as the registry knows it."""

    path: str
    """Path relative to the models root (POSIX separators)."""
    size: int
    """Size in bytes when recorded."""
    mtime_ns: int
    """Modification time when recorded; a change means the file must be re-checked."""
    sha256: str | None = None
    """Content sha256, when computed (download or ``verify --deep``)."""
    blake3: str | None = None
    """Content BLAKE3, when that is what the source gave."""
    source: str | None = None
    """Source spec it came from (None for adopted files)."""
    revision: str | None = None
    """Pinned revision it came from."""
    managed: bool = False
    """Installed by modelmgr (only such files are ever deleted or pruned)."""
    format: str | None = None
    """Container format from inspection (safetensors / gguf / pickle)."""
    precision: str | None = None
    """Precision class from inspection."""
    family: str | None = None
    """Model family from inspection."""
    role: str | None = None
    """Role from inspection or bundle."""
    inspection: dict | None = None
    """The full inspection result (JSON)."""
    inspect_error: str | None = None
    """Why inspection failed, when it did."""
    verified_at: float | None = None
    """Unix time of the last verification."""
    verify_status: str | None = None
    """ok | changed | missing | mismatch | bad-header | unsafe."""
    verify_detail: str | None = None
    """What the last verification found."""
    smoke: dict | None = None
    """Smoke-test results (JSON)."""
    added_at: float = 0.0
    """When it was first recorded."""
    updated_at: float = 0.0
    """When it was last changed."""

    def to_dict(self) -> dict:
        return asdict(self)


_JSON_FIELDS = {"inspection", "smoke"}
_COLUMNS = [f.name for f in fields(Asset)]


class Registry:
    """A handle on one models root's registry; thread-safe, cheap to keep open."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_DIR / "registry.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            # WAL needs memory shared by every user of the database: not possible across the
            # machines that mount one network volume, where a rollback journal is used instead
            self.journal_mode = "DELETE" if is_network_fs(self.path.parent) else "WAL"
            self._db.execute(f"PRAGMA journal_mode={self.journal_mode}")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ModelMgrError(f"the registry {self.path} cannot be opened: {exc}",
                                "move it aside; `modelmgr scan` rebuilds it from the files") \
                from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ModelMgrError(f"the registry {self.path} was written by a newer modelmgr",
                                "upgrade modelmgr")
        with self._lock:  # executescript commits on its own; the DDL is idempotent
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    class _Tx:
        def __init__(self, reg: "Registry") -> None:
            self.reg = reg

        def __enter__(self) -> sqlite3.Connection:
            self.reg._lock.acquire()
            self.reg._db.execute("BEGIN IMMEDIATE")
            return self.reg._db

        def __exit__(self, exc_type, *rest) -> None:
            try:
                self.reg._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.reg._lock.release()

    def _tx(self) -> "_Tx":
        return Registry._Tx(self)

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.fetchall()

    # -- assets ----------------------------------------------------------------------------
    def upsert(self, asset: Asset) -> Asset:
        """Insert or replace an asset (keeping its first ``added_at``)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT added_at FROM assets WHERE path=?", (asset.path,)).fetchone()
            values = asdict(asset)
            values["added_at"] = row[0] if row else (asset.added_at or now)
            values["updated_at"] = now
            values["managed"] = int(bool(asset.managed))
            for key in _JSON_FIELDS:
                values[key] = json.dumps(values[key]) if values[key] is not None else None
            db.execute(f"INSERT OR REPLACE INTO assets ({', '.join(_COLUMNS)}) VALUES "
                       f"({', '.join('?' for _ in _COLUMNS)})", [values[c] for c in _COLUMNS])
        return self.get(asset.path)  # type: ignore[return-value]

    def update(self, path: str, **changes: Any) -> None:
        """Change some columns of one asset."""
        if not changes:
            return
        for key in changes:
            if key not in _COLUMNS or key == "path":
                raise ValueError(f"unknown asset column {key}")
        values = [json.dumps(v) if k in _JSON_FIELDS and v is not None else v
                  for k, v in changes.items()]
        with self._tx() as db:
            db.execute(f"UPDATE assets SET {', '.join(f'{k}=?' for k in changes)}, updated_at=? "
                       "WHERE path=?", (*values, time.time(), path))

    def get(self, path: str) -> Asset | None:
        rows = self._query(f"SELECT {', '.join(_COLUMNS)} FROM assets WHERE path=?", (path,))
        return _asset(rows[0]) if rows else None

    def assets(self, prefix: str | None = None) -> list[Asset]:
        """All assets (or those under a folder prefix), by path."""
        if prefix:
            rows = self._query(f"SELECT {', '.join(_COLUMNS)} FROM assets WHERE path LIKE ? "
                               "ESCAPE '\\' ORDER BY path", (_like_prefix(prefix),))
        else:
            rows = self._query(f"SELECT {', '.join(_COLUMNS)} FROM assets ORDER BY path")
        return [_asset(r) for r in rows]

    def remove(self, path: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM assets WHERE path=?", (path,))
            db.execute("DELETE FROM bundle_files WHERE path=?", (path,))

    # -- bundles ---------------------------------------------------------------------------
    def record_bundle(self, name: str, files: list[tuple[str, str]], origin: str = "") -> None:
        """Mark a bundle installed with its (path, role) files."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO bundles (name, installed_at, origin) VALUES (?,?,?)",
                       (name, time.time(), origin))
            db.execute("DELETE FROM bundle_files WHERE bundle=?", (name,))
            db.executemany("INSERT INTO bundle_files (bundle, path, role) VALUES (?,?,?)",
                           [(name, p, r) for p, r in files])

    def installed_bundles(self) -> dict[str, float]:
        return {r[0]: r[1] for r in self._query("SELECT name, installed_at FROM bundles")}

    def bundle_paths(self, name: str) -> list[str]:
        return [r[0] for r in self._query("SELECT path FROM bundle_files WHERE bundle=? "
                                          "ORDER BY path", (name,))]

    def bundles_using(self, path: str) -> list[str]:
        return [r[0] for r in self._query("SELECT bundle FROM bundle_files WHERE path=? "
                                          "ORDER BY bundle", (path,))]

    def bundles_of_all(self) -> dict[str, list[str]]:
        """path -> bundles using it, in one query (for listings)."""
        out: dict[str, list[str]] = {}
        for path, bundle in self._query("SELECT path, bundle FROM bundle_files ORDER BY bundle"):
            out.setdefault(path, []).append(bundle)
        return out

    def remove_bundle(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM bundles WHERE name=?", (name,))
            db.execute("DELETE FROM bundle_files WHERE bundle=?", (name,))

    def iter_paths(self) -> Iterator[str]:
        for (path,) in self._query("SELECT path FROM assets"):
            yield path


def _asset(row: sqlite3.Row | tuple) -> Asset:
    values = dict(zip(_COLUMNS, row))
    for key in _JSON_FIELDS:
        values[key] = json.loads(values[key]) if values[key] else None
    values["managed"] = bool(values["managed"])
    return Asset(**values)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"
