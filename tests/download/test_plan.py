"""Property tests for the part planner: segments always tile the file exactly."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from modelmgr.download.plan import (MAX_CHUNK, Segment, chunk_size, claim, contiguous_prefix,
                                    filled_bytes, initial_plan, restart_from_prefix, steal)


def assert_tiles(segments: list[Segment], size: int) -> None:
    pos = 0
    for seg in sorted(segments, key=lambda s: s.start):
        assert seg.start == pos, (seg, pos)
        assert seg.start <= seg.end
        assert 0 <= seg.filled <= seg.end - seg.start
        pos = seg.end
    assert pos == size


sizes = st.integers(min_value=1, max_value=1 << 40)


@given(size=sizes, chunk=st.integers(1, 1 << 30), claims=st.integers(0, 40))
def test_claims_tile_the_file_in_order(size, chunk, claims):
    plan = initial_plan(size)
    taken = []
    for _ in range(claims):
        seg = claim(plan, chunk)
        if seg is None:
            break
        taken.append(seg)
        assert_tiles(plan, size)
    starts = [s.start for s in taken]
    assert starts == sorted(starts)  # work proceeds from the front of the file
    for seg in taken[:-1]:
        assert seg.end - seg.start <= chunk + chunk // 2 + 65536


@given(rate=st.floats(1, 1e10) | st.none(), latency=st.floats(0, 10) | st.none(),
       min_part=st.integers(1, 1 << 26))
def test_chunk_size_is_bounded(rate, latency, min_part):
    size = chunk_size(rate, latency, min_part)
    assert min_part <= size <= max(min_part, MAX_CHUNK)


@settings(max_examples=300)
@given(size=st.integers(1, 1 << 34), chunk=st.integers(1, 1 << 30), min_part=st.integers(1, 1 << 24),
       ops=st.lists(st.tuples(st.sampled_from(["fill", "claim", "steal", "release"]),
                              st.integers(0, 1000), st.floats(0, 1)), max_size=60))
def test_claim_fill_and_steal_keep_the_tiling(size, chunk, min_part, ops):
    """Random interleavings of claiming, writing, stealing and releasing never break the cover,
    never lose written bytes, and the prefix only grows."""
    segments = initial_plan(size)
    written_before = 0
    prefix_before = 0
    for op, idx, frac in ops:
        if op == "claim":
            claim(segments, chunk)
        elif op == "steal":
            new = steal(segments, min_part, now=10.0, typical_rate=None, chunk=chunk)
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


@given(size=st.integers(1, 1 << 34), chunk=st.integers(1, 1 << 30), fills=st.lists(st.floats(0, 1)))
def test_restart_from_prefix_keeps_prefix(size, chunk, fills):
    segments = initial_plan(size)
    while claim(segments, chunk) is not None and len(segments) < 50:
        pass
    for seg, frac in zip(segments, fills):
        seg.filled = int((seg.end - seg.start) * frac)
    prefix = contiguous_prefix(segments)
    single = restart_from_prefix(segments, size)
    assert_tiles(single, size)
    assert contiguous_prefix(single) == prefix
    assert len(single) <= 2


def test_steal_splits_only_stragglers_in_half():
    def straggler():
        return [Segment(0, 100, 100), Segment(100, 1100, 10, active=True, claimed_at=0.0)]

    segments = straggler()
    new = steal(segments, 10, now=2.0, typical_rate=1000.0, chunk=100)
    assert new is not None and new.start == 605 and new.end == 1100
    assert segments[1].end == 605
    # too young to judge, too small to split, or going at a normal pace: left alone
    assert steal(straggler(), 10, now=0.2, typical_rate=1000.0, chunk=100) is None
    assert steal([Segment(0, 15, 0, active=True)], 10, now=5.0, typical_rate=None, chunk=10) is None
    fast = [Segment(0, 10_000, 9_000, active=True, claimed_at=0.0)]
    assert steal(fast, 10, now=1.0, typical_rate=9000.0, chunk=1000) is None
