"""``modelmgr status``: the last cycles of every daemon on a volume, what is missing now, and
what failed and why. Read-only: it never creates the root or takes a lease."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import ModelMgrError
from ..service import ModelManager
from .config import DaemonConfig
from .cycles import read_all


def volume_status(root: Path, env: Mapping[str, str], config: DaemonConfig | None = None,
                  last: int = 10) -> dict:
    """The status document (also the ``--json`` output)."""
    root = Path(root)
    docs = read_all(root)
    cycles = sorted((dict(c, name=d.get("name")) for d in docs for c in d["cycles"]),
                    key=lambda c: c.get("finished") or c.get("started") or 0)[-last:]
    failures, daemons = [], []
    for doc in docs:
        if not doc["cycles"]:
            continue
        latest = doc["cycles"][-1]
        ok_times = [c["finished"] for c in doc["cycles"] if c.get("ok")]
        daemons.append({"name": doc.get("name"), "host": latest.get("host"),
                        "last_cycle": latest.get("cycle"), "last_finished": latest.get("finished"),
                        "last_ok": latest.get("ok"), "last_success": max(ok_times, default=None),
                        "deep_verified_at": doc.get("deep_verified_at")})
        if latest.get("error"):
            failures.append({"daemon": doc.get("name"), "cycle": latest.get("cycle"),
                             "bundle": None, "error": latest["error"]})
        for b in latest.get("bundles", []):
            if b.get("state") not in ("in-place", "installed"):
                failures.append({"daemon": doc.get("name"), "cycle": latest.get("cycle"),
                                 "bundle": b["name"], "state": b.get("state"),
                                 "error": b.get("error")})
    missing: list[dict] = []
    if config is not None and root.is_dir():
        missing = _missing_now(config, env)
    return {"root": str(root), "root_exists": root.is_dir(),
            "config": config.to_dict() if config else None,
            "wanted": list(config.bundles) if config else None,
            "ok": root.is_dir() and not missing and not failures,
            "missing": missing, "failures": failures, "daemons": daemons, "cycles": cycles}


def _missing_now(config: DaemonConfig, env: Mapping[str, str]) -> list[dict]:
    """Wanted files not in place right now (``bundle_status``: stat and registry only)."""
    manager = ModelManager(config.settings(env))
    try:
        out = []
        for name in config.bundles:
            try:
                _, statuses, _ = manager.bundle_status(name)
            except ModelMgrError as exc:
                out.append({"bundle": name, "path": None, "state": "unknown",
                            "detail": exc.message})
                continue
            out += [{"bundle": name, "path": s.file.relpath, "state": s.state}
                    for s in statuses if s.state != "present"]
        return out
    finally:
        manager.close()
