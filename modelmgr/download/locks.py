"""An exclusive lock per target file, so two modelmgr processes never write the same file.

``<name>.lock`` beside the target is held with ``flock``; its content says who holds it (pid, host,
start time, command) so a waiting process can tell the user. The lock file is removed on release;
an acquirer re-checks that the path still names the inode it locked, so a lock file unlinked by
its previous holder cannot be held twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import LockedError


class TargetLock:
    """A held lock; ``release()`` (or leaving the ``with`` block) gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "TargetLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(target: Path) -> Path:
    """The lock file of a target."""
    return target.with_name(target.name + ".lock")


def try_lock(target: Path) -> TargetLock | None:
    """Take the lock without waiting; None when another process holds it."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked it after we opened: try the new file
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "command": " ".join(os.path.basename(a) if i == 0 else a
                                    for i, a in enumerate(sys.argv[:4]))}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return TargetLock(path, fd)


def lock_holder(target: Path) -> dict | None:
    """Who holds the lock, as written by the holder (None if unknown)."""
    try:
        return json.loads(lock_path(target).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command', '?')})"


async def acquire(target: Path, wait_seconds: float,
                  on_wait: Callable[[str], None] | None = None) -> TargetLock:
    """Take the lock, waiting up to ``wait_seconds`` for another holder; LockedError after that."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    told = False
    while True:
        lock = try_lock(target)
        if lock is not None:
            return lock
        who = describe_holder(lock_holder(target))
        if time.monotonic() >= deadline:
            raise LockedError(f"{target.name} is being downloaded by {who}",
                              "wait for it to finish, or stop that process; "
                              "MODELMGR_LOCK_WAIT sets how long to wait")
        if on_wait and not told:
            on_wait(f"waiting for {who}, which is downloading {target.name}")
            told = True
        await asyncio.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
