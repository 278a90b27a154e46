"""Network filesystems are told apart from local ones, so the registry picks its journal mode."""

from __future__ import annotations

from pathlib import Path

from modelmgr.library import mounts
from modelmgr.registry.store import Registry

MOUNTINFO = """\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /mnt/volume rw,relatime - nfs4 server:/export rw,vers=4.2
31 22 0:41 / /mnt/my\\040models rw - fuse.juicefs JuiceFS:vol rw
32 30 0:42 / /mnt/volume/local rw - ext4 /dev/vdb rw
"""


def test_filesystem_types_from_mountinfo():
    assert mounts.filesystem_type(Path("/home/x"), MOUNTINFO) == "ext4"
    assert mounts.is_network_fs(Path("/mnt/volume/models"), MOUNTINFO)
    assert mounts.is_network_fs(Path("/mnt/my models/vae"), MOUNTINFO)
    assert not mounts.is_network_fs(Path("/mnt/volume/local/x"), MOUNTINFO)  # nested local mount
    assert not mounts.is_network_fs(Path("/mnt/volumes"), MOUNTINFO)  # a prefix, not inside
    assert not mounts.is_network_fs(Path("/anything"), "")


def test_registry_uses_a_rollback_journal_on_network_volumes(tmp_path, monkeypatch):
    assert Registry(tmp_path / "local").journal_mode == "WAL"
    monkeypatch.setattr("modelmgr.registry.store.is_network_fs", lambda path: True)
    reg = Registry(tmp_path / "volume")
    assert reg.journal_mode == "DELETE"
    assert reg._db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
