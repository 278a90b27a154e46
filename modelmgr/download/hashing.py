"""Hashes computed while bytes arrive, and whole-file hashing for verify and resume.

Many connections write a file out of order, so the hasher follows the *contiguous prefix*: as soon
as bytes ``[hashed, prefix)`` are on disk it reads them back from the page cache (they were just
written, so this is a memory copy, not a disk read) and feeds the hash in a worker thread; hashlib
and blake3 release the GIL, so hashing overlaps with receiving on another core. When the last byte
arrives the digest is ready: finishing a 20 GB file costs no second pass over it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Protocol

READ_BLOCK = 1024 * 1024  # fits in L2, so the hash re-reads what preadv just copied from cache
ALGORITHMS = ("sha256", "blake3")


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str) -> _Hasher:
    """A fresh hash object for ``sha256`` or ``blake3``."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        from blake3 import blake3

        return blake3()
    raise ValueError(f"unsupported hash algorithm {algorithm!r}; use one of {ALGORITHMS}")


def hash_range(fd: int, hasher: _Hasher, start: int, end: int, buf: bytearray | None = None) -> int:
    """Feed ``[start, end)`` of an open file into ``hasher``; returns bytes hashed (blocking)."""
    buf = buf if buf is not None else bytearray(READ_BLOCK)
    view = memoryview(buf)
    pos = start
    while pos < end:
        want = min(len(buf), end - pos)
        got = os.preadv(fd, [view[:want]], pos)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {pos} while hashing")
        hasher.update(view[:got])
        pos += got
    return pos - start


def hash_file(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a whole file (used by ``verify --deep`` and by resume of the prefix)."""
    hasher = new_hasher(algorithm)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass
        hash_range(fd, hasher, 0, size)
    finally:
        os.close(fd)
    return hasher.hexdigest()


class PrefixHasher:
    """Follows the written prefix of a partial file and hashes it in a background thread.

    The engine calls ``advance(prefix)`` whenever the contiguous prefix grows; ``finish(size)``
    waits until everything up to ``size`` is hashed and returns the hex digest.
    """

    def __init__(self, path: Path, algorithm: str) -> None:
        self.algorithm = algorithm
        self._path = path
        self._hasher = new_hasher(algorithm)
        self._hashed = 0
        self._target = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._fd: int | None = None
        self._buf = bytearray(READ_BLOCK)
        self._inflight: asyncio.Future | None = None

    @property
    def hashed(self) -> int:
        """Bytes already fed into the hash."""
        return self._hashed

    def start(self) -> None:
        self._fd = os.open(self._path, os.O_RDONLY)
        self._task = asyncio.create_task(self._run(), name=f"hash:{self._path.name}")

    def advance(self, prefix: int) -> None:
        """Tell the hasher that ``[0, prefix)`` is on disk."""
        if prefix > self._target:
            self._target = prefix
            self._wake.set()

    async def _run(self) -> None:
        assert self._fd is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._hashed < self._target:
                # hash in slices so a long catch-up (resume) reports progress and can be cancelled
                end = min(self._target, self._hashed + 64 * READ_BLOCK)
                self._inflight = asyncio.ensure_future(asyncio.to_thread(
                    hash_range, self._fd, self._hasher, self._hashed, end, self._buf))
                await asyncio.shield(self._inflight)
                self._hashed = end

    async def finish(self, size: int) -> str:
        """Hash up to ``size`` and return the digest."""
        self.advance(size)
        while self._hashed < size:
            if self._task is None or self._task.done():
                if self._task is not None and self._task.exception():
                    raise self._task.exception()  # type: ignore[misc]
                raise RuntimeError("hasher stopped before the end of the file")
            await asyncio.sleep(0.005)
        return self._hasher.hexdigest()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing, errors already seen
                pass
            self._task = None
        if self._inflight is not None:  # a thread may still be reading: never close under it
            await asyncio.gather(self._inflight, return_exceptions=True)
            self._inflight = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
