"""Lease locks on a shared volume, so that machines mounting one volume fetch each file once.

The download engine's ``NAME.lock`` uses ``flock``, which is local to one kernel on many network
volumes (NFS mounted ``nolock``, FUSE mounts) or fails there. These leases need only what such
volumes do provide; the full protocol and its filesystem requirements are in docs/volume-locks.md.

* A lease is a file ``<folder>/<quoted key>.lease`` holding a JSON record: a random token, host,
  pid, boot id, pid namespace, lease length, a heartbeat counter.
* Acquire: write the record to a unique temporary file, then ``link()`` it to the lease name.
  ``link`` fails with EEXIST when the name exists, atomically, on every NFS version (a lost reply
  to a retried LINK is caught by checking the temp file's link count), and the record is complete
  before the name appears. Filesystems without hard links fall back to ``O_CREAT|O_EXCL``.
* Heartbeat: the holder rewrites the record (counter + 1), sets the mtime to its wall clock and
  fsyncs, every ``lease / 3`` s.
  Each renewal first checks that the lease name still points at the holder's inode; if not, the
  lease was taken over and the holder is told to stop (``Lease.lost``).
* Expiry: a waiter never compares its clock with another machine's. It remembers the record's
  signature (inode, mtime, content) and the time it first saw it on its own monotonic clock; an
  unchanged signature for ``lease`` seconds means the holder is gone. Two shortcuts: a holder on
  this very kernel whose pid no longer exists, and a record whose mtime is older than
  ``lease + max_skew`` by the wall clock (a lock left long ago is taken at once).
* Takeover: ``rename()`` the stale file to a unique name (only one waiter can move a given
  file), re-read what was moved, and put it back with ``link()`` if it changed meanwhile (the
  holder renewed it, or it was a new lease). Then acquire as usual, so creation stays the one
  exclusive step.

All clocks are injectable, so the protocol is tested with a fake clock (tests/daemon).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

LEASE_SUFFIX = ".lease"
_NO_HARDLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
_MAX_NAME = 180


@dataclass(frozen=True)
class Identity:
    """Who this process is, as far as other processes on the volume can tell."""

    host: str
    pid: int
    boot_id: str
    """The kernel's random id for this boot: host + boot id names one running kernel."""
    pidns: str
    """The pid namespace (containers): a pid means something only inside its namespace."""

    @classmethod
    def current(cls) -> "Identity":
        return cls(socket.gethostname(), os.getpid(),
                   _read_text("/proc/sys/kernel/random/boot_id"), _readlink("/proc/self/ns/pid"))


@dataclass(frozen=True)
class Holder:
    """The record in a lease file."""

    token: str
    """Random per acquisition: tells this lease from any earlier one of the same process."""
    host: str
    pid: int
    boot_id: str
    pidns: str
    acquired: float
    """Wall time of acquisition (for people reading the file)."""
    lease: float
    """The holder's lease length: a waiter with a shorter one still waits this long."""
    beat: int = 0
    """Heartbeat counter; every renewal changes it, so the file content changes."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> "Holder | None":
        """The record, or None for an empty, partly written or foreign file."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass
class Lease:
    """A lease this process holds; ``lost`` says why it is no longer held."""

    key: str
    path: Path
    fd: int
    holder: Holder
    renewed_at: float
    """Monotonic time of the last successful renewal."""
    lost: str | None = None


@dataclass(frozen=True)
class _Look:
    """One read of a lease file: what identifies this version of it, and its record."""

    signature: tuple
    holder: Holder | None
    mtime: float


class LeaseLocks:
    """The leases in one folder of the volume (``<root>/.modelmgr/locks``) for one process."""

    def __init__(self, folder: Path, lease: float, *, max_skew: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, identity: Identity | None = None,
                 on_event: Callable[..., None] | None = None) -> None:
        self.folder = Path(folder)
        self.lease = lease
        self.max_skew = max_skew
        self.clock = clock
        self.wall = wall
        self.me = identity or Identity.current()
        self.on_event = on_event or (lambda event, **fields: None)
        self.held: dict[str, Lease] = {}
        self._seen: dict[Path, tuple[tuple, float]] = {}

    def path_for(self, key: str) -> Path:
        """The lease file of a key (a path under the models root)."""
        name = quote(key, safe="")
        if len(name) > _MAX_NAME:
            name = name[:100] + "-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.folder / (name + LEASE_SUFFIX)

    # -- acquire -----------------------------------------------------------------------------
    def try_acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` now, taking over an expired one; None when it is held."""
        if key in self.held:
            raise RuntimeError(f"the lease on {key} is already held by this process")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        for _ in range(3):  # create; else judge the holder, break a dead lease, create again
            lease = self._create(path, key)
            if lease is not None:
                self._seen.pop(path, None)
                self.held[key] = lease
                return lease
            look = self._look(path)
            if look is None:
                continue  # released between our attempt and our look
            reason = self._stale_reason(path, look)
            if reason is None:
                return None
            self._break(path, key, look, reason)
        return None

    def try_acquire_all(self, keys: Iterable[str]) -> tuple[list[Lease], str | None]:
        """All of ``keys`` or none: (leases, None), or ([], the first key held elsewhere).

        Taking none while any is busy means no process ever waits while holding a lease, so
        two processes wanting overlapping sets cannot deadlock.
        """
        got: list[Lease] = []
        for key in sorted(set(keys)):
            lease = self.try_acquire(key)
            if lease is None:
                self.release_all(got)
                return [], key
            got.append(lease)
        return got, None

    def holder_of(self, key: str) -> Holder | None:
        """Who holds ``key`` according to its lease file (None: free or unreadable)."""
        look = self._look(self.path_for(key))
        return look.holder if look else None

    def _create(self, path: Path, key: str) -> Lease | None:
        holder = Holder(token=uuid.uuid4().hex, host=self.me.host, pid=self.me.pid,
                        boot_id=self.me.boot_id, pidns=self.me.pidns, acquired=self.wall(),
                        lease=self.lease)
        tmp = path.with_name(f"{path.name}.{holder.token}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        created = False
        try:
            self._write(fd, holder)
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                created = os.fstat(fd).st_nlink >= 2  # NFS: our LINK worked, its reply was lost
            except OSError as exc:
                if exc.errno not in _NO_HARDLINKS:
                    raise
                os.close(fd)
                fd = -1
                fd, created = self._create_exclusive(path, holder)
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            if not created and fd >= 0:
                os.close(fd)
        return Lease(key, path, fd, holder, self.clock()) if created else None

    def _create_exclusive(self, path: Path, holder: Holder) -> tuple[int, bool]:
        """The fallback for filesystems without hard links: an exclusive create, then the
        record (a waiter may briefly read an empty file; that counts as a live holder)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return -1, False
        self._write(fd, holder)
        return fd, True

    def _write(self, fd: int, holder: Holder) -> None:
        """Write the record, stamp the mtime with our wall clock, and make both durable, so
        other machines see the renewal as soon as they open the file."""
        data = holder.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        now = self.wall()
        os.utime(fd, (now, now))
        os.fsync(fd)

    # -- judging a holder --------------------------------------------------------------------
    def _look(self, path: Path) -> _Look | None:
        """Read a lease file through a fresh ``open`` (NFS revalidates attributes on open)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            data = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        return _Look((st.st_dev, st.st_ino, st.st_mtime_ns, data), Holder.decode(data),
                     st.st_mtime)

    def _stale_reason(self, path: Path, look: _Look) -> str | None:
        """Why the lease in ``path`` may be taken over, or None while its holder is alive."""
        holder = look.holder
        if holder is not None and self._same_kernel(holder):
            if holder.pid == self.me.pid:
                if all(lease.holder.token != holder.token for lease in self.held.values()):
                    return "left by an earlier process with this pid"
            elif not _pid_alive(holder.pid):
                return f"pid {holder.pid} on this machine is gone"
        lease = max(self.lease, holder.lease if holder else 0.0)
        now = self.clock()
        signature, since = self._seen.get(path, (None, now))
        if signature != look.signature:
            self._seen[path] = (look.signature, now)
            since = now
        if now - since >= lease:
            return f"no heartbeat for {now - since:.1f}s (lease {lease:g}s)"
        age = self.wall() - look.mtime
        if age >= lease + self.max_skew:
            return f"last renewed {age:.0f}s ago (lease {lease:g}s + skew {self.max_skew:g}s)"
        return None

    def _same_kernel(self, holder: Holder) -> bool:
        me = self.me
        return bool(me.boot_id and me.pidns) and (holder.host, holder.boot_id, holder.pidns) == \
            (me.host, me.boot_id, me.pidns)

    def _break(self, path: Path, key: str, look: _Look, reason: str) -> bool:
        """Move a stale lease out of the way; True when the file we judged is gone for good."""
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False  # another waiter moved it first, or its holder released it
        moved = self._look(aside)
        if moved is None or moved.signature != look.signature:
            self._restore(aside, path)  # renewed or replaced after we judged it: not ours
            return False
        aside.unlink()
        self._seen.pop(path, None)
        who = look.holder.describe() if look.holder else "an unknown holder"
        self.on_event("lock.takeover", key=key, holder=who, reason=reason)
        return True

    @staticmethod
    def _restore(aside: Path, path: Path) -> None:
        try:
            os.link(aside, path)  # keeps the inode, so its holder does not notice
        except FileExistsError:
            pass  # a new lease was created meanwhile; the moved holder learns it lost
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            if not path.exists():
                os.rename(aside, path)
        try:
            aside.unlink()
        except FileNotFoundError:
            pass

    # -- holding -----------------------------------------------------------------------------
    def renew(self, lease: Lease) -> bool:
        """Heartbeat one lease; False (and ``lease.lost`` set) when it is no longer ours."""
        if lease.lost is not None:
            return False
        try:
            look = self._look(lease.path)
            mine = os.fstat(lease.fd)
            if look is None or look.signature[:2] != (mine.st_dev, mine.st_ino):
                taker = look.holder.describe() if look and look.holder else "nobody"
                lease.lost = f"the lease was taken over (now held by {taker})"
                return False
            holder = replace(lease.holder, beat=lease.holder.beat + 1)
            self._write(lease.fd, holder)
        except OSError as exc:  # a volume hiccup: lost only once the lease ran out meanwhile
            if self.clock() - lease.renewed_at >= lease.holder.lease:
                lease.lost = f"cannot renew the lease: {exc.strerror or exc}"
                return False
            return True
        lease.holder, lease.renewed_at = holder, self.clock()
        return True

    def renew_all(self) -> list[Lease]:
        """Heartbeat every held lease; returns the ones found lost."""
        return [lease for lease in list(self.held.values()) if not self.renew(lease)]

    def release(self, lease: Lease) -> None:
        """Give a lease back (removing the file only if it is still ours)."""
        self.held.pop(lease.key, None)
        if lease.fd < 0:
            return
        try:
            look = self._look(lease.path)
            mine = os.fstat(lease.fd)
            if look is not None and look.signature[:2] == (mine.st_dev, mine.st_ino):
                lease.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(lease.fd)
            lease.fd = -1

    def release_all(self, leases: Iterable[Lease]) -> None:
        for lease in list(leases):
            self.release(lease)

    def sweep(self) -> list[Path]:
        """Remove temp and moved-aside files left by processes that died mid-step."""
        removed = []
        limit = 10 * self.lease + self.max_skew
        try:
            entries = list(self.folder.iterdir())
        except FileNotFoundError:
            return removed
        for path in entries:
            if not path.name.endswith((".tmp", ".stale")):
                continue
            try:
                if self.wall() - path.stat().st_mtime > limit:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                pass
        return removed


async def keep_alive(locks: LeaseLocks, on_lost: Callable[[Lease], None]) -> None:
    """Renew every held lease every ``lease / 3`` seconds until cancelled."""
    while True:
        await asyncio.sleep(locks.lease / 3)
        for lease in locks.renew_all():
            on_lost(lease)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
