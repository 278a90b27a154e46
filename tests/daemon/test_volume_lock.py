"""The volume lease protocol with a fake clock: several "processes" are several ``LeaseLocks``
with their own identities on one real folder."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from modelmgr.daemon.volume_lock import Holder, Identity, LeaseLocks, keep_alive


class Clock:
    """Monotonic and wall clocks that move only when told (the wall one starts at real time,
    because file mtimes are real)."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.offset = 0.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.offset += seconds


def make(folder, clock: Clock, host: str, pid: int = 4242, lease: float = 10.0,
         boot: str | None = None, events: list | None = None) -> LeaseLocks:
    identity = Identity(host, pid, boot or f"boot-{host}", "pid:[4026531836]")
    sink = (lambda event, **f: events.append((event, f))) if events is not None else None
    return LeaseLocks(folder, lease, max_skew=5.0, clock=clock.monotonic, wall=clock.wall,
                      identity=identity, on_event=sink)


def test_one_holder_at_a_time_and_the_record_is_complete(tmp_path):
    clock = Clock()
    a, b = make(tmp_path, clock, "node-a"), make(tmp_path, clock, "node-b")
    lease = a.try_acquire("vae/ae.safetensors")
    assert lease is not None
    assert lease.path.name == "vae%2Fae.safetensors.lease"
    assert Holder.decode(lease.path.read_bytes()).token == lease.holder.token
    assert b.try_acquire("vae/ae.safetensors") is None
    assert b.holder_of("vae/ae.safetensors").describe() == "pid 4242 on node-a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae%2Fae.safetensors.lease"]
    a.release(lease)
    assert not lease.path.exists()
    assert b.try_acquire("vae/ae.safetensors") is not None


def test_silent_holder_is_taken_over_after_the_lease_and_learns_it_lost(tmp_path):
    clock, seen = Clock(), []
    a, b = make(tmp_path, clock, "node-a"), make(tmp_path, clock, "node-b", events=seen)
    old = a.try_acquire("x")
    assert b.try_acquire("x") is None  # first look: the clock starts now
    clock.advance(9.9)
    assert b.try_acquire("x") is None
    clock.advance(0.2)
    new = b.try_acquire("x")
    assert new is not None
    assert seen[0][0] == "lock.takeover" and "no heartbeat" in seen[0][1]["reason"]
    assert not a.renew(old) and "node-b" in old.lost
    a.release(old)  # releasing a lost lease must not delete the new holder's file
    assert b.renew(new) and new.path.exists()


def test_a_renewing_holder_is_never_taken_over(tmp_path):
    clock = Clock()
    a, b = make(tmp_path, clock, "node-a"), make(tmp_path, clock, "node-b")
    lease = a.try_acquire("x")
    for _ in range(10):
        clock.advance(10 / 3)
        assert a.renew_all() == []
        assert b.try_acquire("x") is None
    assert lease.holder.beat == 10 and Holder.decode(lease.path.read_bytes()).beat == 10


def test_a_lease_untouched_for_long_is_taken_at_first_sight(tmp_path):
    clock = Clock()
    a = make(tmp_path, clock, "node-a")
    lease = a.try_acquire("x")
    old = time.time() - 16  # lease 10 + skew 5 < 16
    os.utime(lease.path, (old, old))
    assert make(tmp_path, clock, "node-b").try_acquire("x") is not None
    fresh = make(tmp_path, clock, "node-c")
    assert fresh.try_acquire("x") is None  # a fresh lease is not old by the wall clock


def test_the_holders_longer_lease_is_honoured(tmp_path):
    clock = Clock()
    a = make(tmp_path, clock, "node-a", lease=30.0)
    b = make(tmp_path, clock, "node-b", lease=10.0)
    a.try_acquire("x")
    assert b.try_acquire("x") is None
    clock.advance(15)
    assert b.try_acquire("x") is None
    clock.advance(16)
    assert b.try_acquire("x") is not None


def test_same_machine_dead_pid_is_taken_at_once_live_pid_is_not(tmp_path):
    clock = Clock()
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        me = make(tmp_path, clock, "node-a", pid=os.getpid(), boot="boot-1")
        make(tmp_path, clock, "node-a", pid=dead.pid, boot="boot-1").try_acquire("gone")
        make(tmp_path, clock, "node-a", pid=alive.pid, boot="boot-1").try_acquire("live")
        assert me.try_acquire("gone") is not None
        assert me.try_acquire("live") is None
        # the same pid on another boot (or host) proves nothing: only the lease counts there
        make(tmp_path, clock, "node-a", pid=dead.pid, boot="boot-0").try_acquire("other-boot")
        assert me.try_acquire("other-boot") is None
    finally:
        alive.kill()
        alive.wait()


def test_a_lease_left_by_an_earlier_process_with_our_pid_is_not_mistaken_for_ours(tmp_path):
    clock = Clock()
    earlier = make(tmp_path, clock, "node-a", pid=os.getpid(), boot="boot-1")
    earlier.try_acquire("x")
    now = make(tmp_path, clock, "node-a", pid=os.getpid(), boot="boot-1")
    assert now.try_acquire("x") is not None


def test_racing_breakers_only_one_wins_and_a_late_break_is_undone(tmp_path):
    clock = Clock()
    a = make(tmp_path, clock, "node-a")
    b, c = make(tmp_path, clock, "node-b"), make(tmp_path, clock, "node-c")
    a.try_acquire("x")
    path = a.path_for("x")
    assert b.try_acquire("x") is None and c.try_acquire("x") is None
    stale_look = c._look(path)
    clock.advance(11)
    won = b.try_acquire("x")
    assert won is not None
    assert c.try_acquire("x") is None  # c sees a new file: its clock starts again
    # c judged the old file stale, then got delayed; its rename now moves b's live lease...
    assert c._break(path, "x", stale_look, "late") is False
    # ...and puts it back: same inode, so b keeps its lease and notices nothing
    assert b.renew(won)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lease"]


def test_acquire_all_is_all_or_nothing(tmp_path):
    clock = Clock()
    a, b = make(tmp_path, clock, "node-a"), make(tmp_path, clock, "node-b")
    b.try_acquire("m")
    leases, busy = a.try_acquire_all(["z", "m", "a"])
    assert leases == [] and busy == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lease"] and a.held == {}
    b.release_all(list(b.held.values()))
    leases, busy = a.try_acquire_all(["z", "m", "a"])
    assert busy is None and [lease.key for lease in leases] == ["a", "m", "z"]


def test_sweep_and_long_names(tmp_path):
    clock = Clock()
    a = make(tmp_path, clock, "node-a")
    stray = tmp_path / "x.lease.0123.tmp"
    stray.write_text("{}")
    fresh = tmp_path / "y.lease.4567.stale"
    fresh.write_text("{}")
    clock.advance(10 * 10 + 5 + 1)
    os.utime(fresh, (clock.wall(), clock.wall()))
    assert a.sweep() == [stray] and fresh.exists()
    long_key = "loras/" + "n" * 400 + ".safetensors"
    lease = a.try_acquire(long_key)
    assert len(lease.path.name) < 255 and a.path_for(long_key) == lease.path


async def test_keep_alive_renews_and_reports_a_lost_lease(tmp_path):
    a = LeaseLocks(tmp_path, 0.3, identity=Identity("node-a", 1, "boot-a", "ns"))
    lease = a.try_acquire("x")
    lost = []
    task = asyncio.create_task(keep_alive(a, lost.append))
    try:
        await asyncio.sleep(0.25)
        assert lease.holder.beat >= 1 and not lost
        old = time.time() - 60
        os.utime(lease.path, (old, old))
        taker = LeaseLocks(tmp_path, 0.3, identity=Identity("node-b", 2, "boot-b", "ns"))
        assert taker.try_acquire("x") is not None
        for _ in range(50):
            if lost:
                break
            await asyncio.sleep(0.02)
        assert lost == [lease] and "node-b" in lease.lost
    finally:
        task.cancel()
