"""The part planner: pure functions over a list of byte segments.

A file of ``size`` bytes is covered by non-overlapping segments ``[start, end)``; each records how
many of its leading bytes are already on disk (``filled``). Connections ``claim`` chunks from the
lowest unclaimed bytes, so all of them work in a window just past the written prefix and the
streamed hash keeps up with the download (16 big equal parts would leave 15/16 of the file to hash
after the last byte arrives). Chunks are sized from the measured round trip so the gaps between
requests stay small. When nothing is left to claim, an idle connection *steals* the second half
of the busiest remaining segment, so a slow or dead tail never leaves the download "stuck at
99 %". Nothing here does I/O, so it is property-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64 * 1024  # split points are aligned so parts map to whole pages and tidy ranges
MAX_CHUNK = 64 * 1024 * 1024


@dataclass
class Segment:
    """A byte range of the file; ``[start, start + filled)`` is written, ``[.., end)`` is not."""

    start: int
    end: int
    filled: int = 0
    active: bool = False
    """Runtime only: a connection is working on it (never persisted)."""
    claimed_at: float = 0.0
    """Runtime only: when the current connection took it (monotonic seconds)."""
    claimed_filled: int = 0
    """Runtime only: ``filled`` at that moment, to measure this connection's rate."""

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


def initial_plan(size: int) -> list[Segment]:
    """The plan of a fresh download: one unclaimed segment covering the file.

    Connections carve chunks off its front with ``claim`` as they go, so the work stays in a
    window near the start of the file and the hash prefix grows at the full download rate.
    """
    return [Segment(0, max(0, size))]


def chunk_size(conn_rate: float | None, latency: float | None, min_part: int,
               max_part: int = MAX_CHUNK, latency_factor: float = 20.0) -> int:
    """How many bytes one request should ask for.

    Each request costs one round trip of idle time on its connection, so a chunk should last
    ``latency_factor`` round trips (≤ 5 % idle). Larger chunks widen the window of data that
    is on disk but not yet hashed, so chunks are no larger than that.
    """
    if not conn_rate or latency is None:
        return min_part
    want = int(conn_rate * latency * latency_factor)
    return max(min_part, min(max_part, -(-want // ALIGN) * ALIGN))


def claim(segments: list[Segment], chunk: int, now: float = 0.0) -> Segment | None:
    """Take the lowest idle unfinished segment, cut down to about ``chunk`` bytes; mark active.

    The rest of a cut segment stays idle for the next claimant. A leftover smaller than half a
    chunk is not split off (it would cost a request for little data).
    """
    idle = [s for s in segments if not s.active and not s.done]
    if not idle:
        return None
    seg = min(idle, key=lambda s: s.start)
    if seg.remaining > chunk + chunk // 2:
        cut = seg.position + chunk
        aligned = (cut // ALIGN) * ALIGN
        if seg.position < aligned:
            cut = aligned
        segments.append(Segment(cut, seg.end))
        seg.end = cut
    seg.active, seg.claimed_at, seg.claimed_filled = True, now, seg.filled
    return seg


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


def steal(segments: list[Segment], min_split: int, now: float, typical_rate: float | None,
          chunk: int, min_age: float = 0.5, min_eta: float = 1.0) -> Segment | None:
    """Split a *straggling* active segment; return the new (second-half) segment, marked active.

    A straggler has run for ``min_age`` seconds and, at its own rate, needs more than
    ``min_eta`` seconds and three times what a normal chunk takes at ``typical_rate``: only then
    is a second connection worth what stealing costs (the victim's reply, already in flight past
    the new end, is cut off). The victim keeps ``[position, mid)`` and stops at its new ``end``;
    the thief gets ``[mid, old_end)``. None when nothing qualifies.
    """
    normal = chunk / typical_rate if typical_rate else 0.0

    def straggling(s: Segment) -> bool:
        age = now - s.claimed_at
        if not s.active or s.remaining < 2 * max(1, min_split) or age < min_age:
            return False
        rate = (s.filled - s.claimed_filled) / age
        eta = s.remaining / rate if rate > 0 else float("inf")
        return eta > max(min_eta, 3 * normal)

    candidates = [s for s in segments if straggling(s)]
    if not candidates:
        return None
    victim = max(candidates, key=lambda s: s.remaining)
    mid = victim.position + victim.remaining // 2
    aligned = (mid // ALIGN) * ALIGN
    if victim.position < aligned < victim.end:
        mid = aligned
    new = Segment(mid, victim.end, 0, active=True, claimed_at=now)
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
