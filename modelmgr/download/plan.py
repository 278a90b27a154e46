"""The part planner: pure functions over a list of byte segments.

A file of ``size`` bytes is covered by non-overlapping segments ``[start, end)``; each records how
many of its leading bytes are already on disk (``filled``). Connections take unstarted segments
first; when none are left, an idle connection *steals* the second half of the busiest remaining
segment, so a slow or dead tail never leaves the download "stuck at 99 %". The hasher follows
``contiguous_prefix``. Nothing here does I/O, so it is property-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64 * 1024  # split points are aligned so parts map to whole pages and tidy ranges


@dataclass
class Segment:
    """A byte range of the file; ``[start, start + filled)`` is written, ``[.., end)`` is not."""

    start: int
    end: int
    filled: int = 0
    active: bool = False
    """Runtime only: a connection is working on it (never persisted)."""

    @property
    def position(self) -> int:
        """The next byte offset to write."""
        return self.start + self.filled

    @property
    def remaining(self) -> int:
        """Bytes not yet written."""
        return self.end - self.position

    @property
    def done(self) -> bool:
        return self.position >= self.end


def initial_plan(size: int, connections: int, min_part: int) -> list[Segment]:
    """Split ``size`` bytes into at most ``connections`` parts of at least ``min_part`` bytes.

    Parts are near-equal (aligned to ``ALIGN`` where that keeps them non-empty) so that under a
    per-connection bandwidth cap they all finish at about the same time.
    """
    if size <= 0:
        return [Segment(0, 0)]
    min_part = max(1, min_part)
    count = max(1, min(connections, size // min_part))
    step = -(-size // count)
    if step > ALIGN:
        step = -(-step // ALIGN) * ALIGN
    segments = []
    start = 0
    while start < size:
        end = min(size, start + step)
        segments.append(Segment(start, end))
        start = end
    return segments


def contiguous_prefix(segments: list[Segment]) -> int:
    """Length of the written prefix ``[0, n)`` with no holes: what the hasher may consume."""
    prefix = 0
    for seg in sorted(segments, key=lambda s: s.start):
        if seg.start != prefix:
            break
        prefix = seg.position
        if not seg.done:
            break
    return prefix


def filled_bytes(segments: list[Segment]) -> int:
    """Bytes written so far across all segments."""
    return sum(min(s.filled, s.end - s.start) for s in segments)


def next_unstarted(segments: list[Segment]) -> Segment | None:
    """The lowest idle, unfinished segment (lowest first so the hash prefix moves early)."""
    idle = [s for s in segments if not s.active and not s.done]
    return min(idle, key=lambda s: s.start) if idle else None


def steal(segments: list[Segment], min_split: int) -> Segment | None:
    """Split the active segment with the most bytes left; return the new (second-half) segment.

    The victim keeps ``[position, mid)`` and must stop at its new ``end``; the thief gets
    ``[mid, old_end)``. Returns None when no segment has at least ``2 * min_split`` bytes left.
    The new segment is appended to ``segments`` and marked active.
    """
    candidates = [s for s in segments if s.active and s.remaining >= 2 * max(1, min_split)]
    if not candidates:
        return None
    victim = max(candidates, key=lambda s: s.remaining)
    mid = victim.position + victim.remaining // 2
    aligned = (mid // ALIGN) * ALIGN
    if victim.position < aligned < victim.end:
        mid = aligned
    new = Segment(mid, victim.end, 0, active=True)
    victim.end = mid
    segments.append(new)
    return new


def restart_from_prefix(segments: list[Segment], size: int) -> list[Segment]:
    """Collapse to one segment continuing after the written prefix (for single-stream fallback).

    Used when a server ignores Range: a plain GET streams from byte 0, so everything after the
    contiguous prefix is rewritten in order and the hash prefix never moves backwards.
    """
    prefix = contiguous_prefix(segments)
    plan = [Segment(0, prefix, prefix)] if prefix else []
    plan.append(Segment(prefix, size, 0))
    return plan
