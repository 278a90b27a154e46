"""Reserve a partial file's blocks up front with ``fallocate(2)``.

Reserving the whole file at once makes a full disk fail at the start instead of gigabytes in, and
writes into reserved extents cost the kernel less than writes into a sparse file. Filesystems that
cannot reserve (some NFS versions, tmpfs on old kernels) get a sparse file instead: glibc's
``posix_fallocate`` emulation would write every block and is not used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from ..errors import DiskSpaceError

_libc = None


def _fallocate():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "fallocate", None) if _libc else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        fn.restype = ctypes.c_int
    return fn


def preallocate(fd: int, size: int) -> bool:
    """Give the open file ``size`` bytes, reserved if the filesystem can; True if reserved."""
    os.ftruncate(fd, size)
    fn = _fallocate()
    if fn is None or size <= 0:
        return False
    if fn(fd, 0, 0, size) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSPC, errno.EDQUOT):
        raise DiskSpaceError(f"not enough disk space to reserve {size} bytes",
                             "free some space or choose another destination")
    return False  # EOPNOTSUPP and friends: stay sparse
