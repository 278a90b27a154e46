"""The resume sidecar: ``<name>.partial.json`` next to ``<name>.partial``.

It records which bytes of the partial file are written and which remote file they belong to
(source, revision, ETag, size, expected hashes). A rerun resumes only when that identity still
matches, so a changed remote file restarts cleanly instead of mixing bytes. The sidecar is
replaced atomically and written only after the data it describes was flushed (``fdatasync``), so
after a crash, a kill -9 or a power cut it never claims bytes that are not on disk. It never holds
credentials or full signed URLs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .plan import Segment

STATE_VERSION = 1


@dataclass
class DownloadState:
    """Serializable progress of one file."""

    identity: dict
    size: int
    segments: list[Segment]

    def to_json(self) -> str:
        return json.dumps({
            "version": STATE_VERSION,
            "identity": self.identity,
            "size": self.size,
            "segments": [[s.start, s.end, s.filled] for s in self.segments],
        }, sort_keys=True)


def state_path(partial: Path) -> Path:
    """Where the sidecar of a partial file lives."""
    return partial.with_name(partial.name + ".json")


def save_state(path: Path, state: DownloadState) -> None:
    """Write the sidecar atomically (temp file + ``os.replace``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(state.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> DownloadState | None:
    """Read a sidecar; None when it is missing or unusable (the download then starts over)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != STATE_VERSION:
            return None
        size = int(raw["size"])
        segments = [Segment(int(a), int(b), int(f)) for a, b, f in raw["segments"]]
        identity = raw["identity"]
        if not isinstance(identity, dict) or not _segments_valid(segments, size):
            return None
        return DownloadState(identity=identity, size=size, segments=segments)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _segments_valid(segments: list[Segment], size: int) -> bool:
    """Segments must tile ``[0, size)`` exactly with sane fill counts."""
    pos = 0
    for seg in sorted(segments, key=lambda s: s.start):
        if seg.start != pos or seg.end < seg.start or not 0 <= seg.filled <= seg.end - seg.start:
            return False
        pos = seg.end
    return pos == size


def remove_state(path: Path) -> None:
    """Delete the sidecar (after a successful finalize, or to start over)."""
    for p in (path, path.with_name(path.name + ".tmp")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
