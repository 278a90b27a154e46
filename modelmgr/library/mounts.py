"""Which filesystem a path lives on, read from ``/proc/self/mountinfo``.

SQLite's WAL mode needs shared memory between the processes using a database, which a network
filesystem cannot provide across machines: a registry on an NFS/SMB/FUSE cloud volume must use a
rollback journal instead. This module answers "is this path on such a filesystem?".
"""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre",
              "gpfs", "beegfs", "afs", "virtiofs", "fuse")
"""Filesystem types (and ``fuse.*`` sub-types) treated as shared between machines."""


def _unescape(field: str) -> str:
    """mountinfo escapes spaces, tabs, newlines and backslashes as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding ``path`` (None when it cannot be told)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount_point = _unescape(fields[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def is_network_fs(path: Path, mountinfo: str | None = None) -> bool:
    """True for filesystems that several machines may mount at once."""
    fstype = filesystem_type(path, mountinfo) or ""
    return fstype.split(".")[0] in NETWORK_FS
