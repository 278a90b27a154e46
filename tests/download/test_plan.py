"""Property tests for the part planner: segments always tile the file exactly."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from modelmgr.download.plan import (Segment, contiguous_prefix, filled_bytes, initial_plan,
                                    next_unstarted, restart_from_prefix, steal)


def assert_tiles(segments: list[Segment], size: int) -> None:
    pos = 0
    for seg in sorted(segments, key=lambda s: s.start):
        assert seg.start == pos, (seg, pos)
        assert seg.start <= seg.end
        assert 0 <= seg.filled <= seg.end - seg.start
        pos = seg.end
    assert pos == size


sizes = st.integers(min_value=1, max_value=1 << 40)


@given(size=sizes, conns=st.integers(1, 64), min_part=st.integers(1, 1 << 30))
def test_initial_plan_tiles_and_respects_limits(size, conns, min_part):
    plan = initial_plan(size, conns, min_part)
    assert_tiles(plan, size)
    assert 1 <= len(plan) <= conns
    if len(plan) > 1:
        assert all(s.end - s.start >= min(min_part, size) for s in plan[:-1])


@settings(max_examples=300)
@given(size=st.integers(1, 1 << 34), conns=st.integers(1, 32), min_part=st.integers(1, 1 << 24),
       ops=st.lists(st.tuples(st.sampled_from(["fill", "claim", "steal", "release"]),
                              st.integers(0, 1000), st.floats(0, 1)), max_size=60))
def test_claim_fill_and_steal_keep_the_tiling(size, conns, min_part, ops):
    """Random interleavings of claiming, writing, stealing and releasing never break the cover,
    never lose written bytes, and the prefix only grows."""
    segments = initial_plan(size, conns, min_part)
    written_before = 0
    prefix_before = 0
    for op, idx, frac in ops:
        if op == "claim":
            seg = next_unstarted(segments)
            if seg:
                seg.active = True
        elif op == "steal":
            new = steal(segments, min_part)
            if new is not None:
                assert new.remaining >= min_part
        elif op == "fill" and segments:
            seg = segments[idx % len(segments)]
            seg.filled += int(seg.remaining * frac)
        elif op == "release" and segments:
            segments[idx % len(segments)].active = False
        assert_tiles(segments, size)
        written = filled_bytes(segments)
        assert written >= written_before
        written_before = written
        prefix = contiguous_prefix(segments)
        assert prefix >= prefix_before
        prefix_before = prefix


@given(size=st.integers(1, 1 << 34), conns=st.integers(1, 32), fills=st.lists(st.floats(0, 1)))
def test_restart_from_prefix_keeps_prefix(size, conns, fills):
    segments = initial_plan(size, conns, 1)
    for seg, frac in zip(segments, fills):
        seg.filled = int((seg.end - seg.start) * frac)
    prefix = contiguous_prefix(segments)
    single = restart_from_prefix(segments, size)
    assert_tiles(single, size)
    assert contiguous_prefix(single) == prefix
    assert len(single) <= 2


def test_steal_splits_the_busiest_segment_in_half():
    segments = [Segment(0, 100, 100), Segment(100, 1100, 0, active=True)]
    new = steal(segments, 10)
    assert new is not None and new.start == 600 and new.end == 1100
    assert segments[1].end == 600
    assert steal([Segment(0, 15, 0, active=True)], 10) is None
