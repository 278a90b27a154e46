"""UrlSource: size and validators from HEAD, or a one-byte GET where HEAD is refused."""

from __future__ import annotations

import pytest

from modelmgr.errors import NotFoundError, UnsafePathError, UsageError
from modelmgr.settings import Settings
from modelmgr.sources.url import UrlSource
from tests.servers.ranges import RangeServer

DATA = b"x" * 5000


@pytest.mark.parametrize("head_allowed", [True, False])
async def test_size_name_and_etag(head_allowed):
    async with RangeServer(head_allowed=head_allowed) as srv:
        srv.add_file("/dir/model v2.safetensors", DATA, etag='"abc"')
        [remote] = await UrlSource(Settings.from_env({}),
                                   srv.url("/dir/model%20v2.safetensors")).resolve()
        assert remote.size == len(DATA) and remote.etag == "abc"
        assert remote.name == "model v2.safetensors"
        methods = [r.method for r in srv.requests]
        assert methods == (["HEAD"] if head_allowed else ["HEAD", "GET"])
        if not head_allowed:
            assert srv.requests[-1].range == "bytes=0-0"


async def test_errors_are_clear():
    async with RangeServer() as srv:
        srv.add_file("/evil", DATA, content_disposition='attachment; filename="a/../../b"')
        with pytest.raises(UnsafePathError):
            await UrlSource(Settings.from_env({}), srv.url("/evil")).resolve()
        with pytest.raises(NotFoundError):
            await UrlSource(Settings.from_env({}), srv.url("/missing")).resolve()
    with pytest.raises(UsageError):
        UrlSource(Settings.from_env({}), "http://user:pw@127.0.0.1/x")
    with pytest.raises(UsageError):
        UrlSource(Settings.from_env({}), "http://127.0.0.1/x", sha256="zz")
