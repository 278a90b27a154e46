"""Finalize a download: verify size and hash, fsync, atomic rename; or quarantine.

A partial file never appears under the final name. When the size or hash is wrong the bytes are
moved to ``.modelmgr-quarantine/`` beside the target (not deleted: the user may want to inspect
them, and a remote whose metadata is stale should not make us throw away gigabytes in a loop), and
the error names the expected and the actual values.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from typing import Any, Callable

from ..errors import IntegrityError, ModelMgrError

QUARANTINE_DIR = ".modelmgr-quarantine"


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def quarantine(partial: Path, final: Path, tag: str) -> Path:
    """Move ``partial`` aside into the quarantine folder; returns where it went."""
    qdir = final.parent / QUARANTINE_DIR
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / f"{final.name}.{tag}.{int(time.time())}"
    os.replace(partial, dest)
    return dest


def finalize(partial: Path, final: Path, *, size: int, expected: tuple[str, str] | None,
             actual_digest: str | None, source: str,
             check: Callable[[Path], Any] | None = None) -> Any:
    """Check ``partial`` and rename it to ``final``; IntegrityError (and quarantine) otherwise.

    ``check`` (a header/format check) runs on the verified bytes before the rename; whatever it
    raises quarantines the file too, so a mislabelled file never lands under the final name.
    Returns what ``check`` returned.
    """
    actual_size = partial.stat().st_size
    if actual_size != size:
        where = quarantine(partial, final, f"size-{actual_size}")
        raise IntegrityError(
            f"{final.name}: size mismatch: expected {size} bytes, got {actual_size}; "
            f"bytes kept in {where}", f"pull again; if it repeats, the source ({source}) is wrong")
    if expected is not None:
        algo, want = expected
        if actual_digest is None or actual_digest.lower() != want.lower():
            where = quarantine(partial, final, f"{algo}-{(actual_digest or 'none')[:16]}")
            raise IntegrityError(
                f"{final.name}: {algo} mismatch: expected {want}, got {actual_digest}; "
                f"bytes kept in {where}",
                f"the remote file or its published hash changed ({source}); pull again, or "
                "report it to the publisher")
    checked = None
    if check is not None:
        try:
            checked = check(partial)
        except ModelMgrError:
            quarantine(partial, final, "format")
            raise
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, final)
    fsync_dir(final.parent)
    return checked
