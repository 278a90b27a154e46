"""Self-tests of the loopback servers: if these lie, every test built on them lies too."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub import HfApi, hf_hub_download
from multidict import CIMultiDict

from tests.servers import CivitaiFile, CivitaiServer, Fault, HubServer, RangeServer, run_in_thread
from tests.servers.ranges import UNSATISFIABLE, parse_range

DATA = os.urandom(300_000)


async def fetch(url: str, headers: dict | None = None, *, method: str = "GET",
                redirects: bool = True) -> tuple[int, CIMultiDict, bytes, str | None]:
    """(status, headers, body received, error) -- a cut-off body is returned, not raised."""
    async with aiohttp.ClientSession() as session, session.request(
            method, url, headers=headers or {}, allow_redirects=redirects) as resp:
        body, error = b"", None
        try:
            async for chunk in resp.content.iter_any():
                body += chunk
        except aiohttp.ClientPayloadError as exc:
            error = str(exc)
        return resp.status, CIMultiDict(resp.headers), body, error


@pytest.fixture
async def srv():
    async with RangeServer() as server:
        server.add_file("/f.bin", DATA)
        yield server


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-5", (95, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=100-", UNSATISFIABLE), ("bytes=-0", UNSATISFIABLE),
    ("bytes=5-2", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=x-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


async def test_ranges_exact(srv):
    status, headers, body, _ = await fetch(srv.url("/f.bin"), {"Range": "bytes=100-199"})
    assert (status, body) == (206, DATA[100:200])
    assert headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
    assert headers["Content-Length"] == "100" and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Encoding"] == "identity" and headers["ETag"].startswith('"')
    status, headers, body, _ = await fetch(srv.url("/f.bin"), {"Range": "bytes=-10"})
    assert (status, body) == (206, DATA[-10:])
    status, _, body, _ = await fetch(srv.url("/f.bin"))
    assert (status, body) == (200, DATA)
    status, headers, _, _ = await fetch(srv.url("/f.bin"), {"Range": f"bytes={len(DATA)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(DATA)}"
    status, _, body, _ = await fetch(srv.url("/f.bin"), {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (status, body) == (200, DATA)  # If-Range mismatch: the whole, current entity
    assert (await fetch(srv.url("/missing")))[0] == 404
    assert [r.status for r in srv.requests] == [206, 206, 200, 416, 200, 404]
    assert srv.requests[0].bytes_sent == 100 and srv.requests[0].range == "bytes=100-199"


async def test_head_and_head_refused(srv):
    status, headers, body, _ = await fetch(srv.url("/f.bin"), method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(DATA)))
    srv.head_allowed = False
    assert (await fetch(srv.url("/f.bin"), method="HEAD"))[0] == 405


async def test_files_from_disk_and_replaced(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(DATA)
    async with RangeServer() as server:
        first = server.add_file("/big.bin", path, content_disposition='attachment; filename="x"')
        etag = first.etag
        status, headers, body, _ = await fetch(server.url("/big.bin"), {"Range": "bytes=5-"})
        assert (status, body, headers["Content-Disposition"]) == (206, DATA[5:],
                                                                   'attachment; filename="x"')
        server.replace_file("/big.bin", b"new content")
        status, headers, body, _ = await fetch(server.url("/big.bin"))
        assert (body, headers["ETag"] != etag) == (b"new content", True)
        server.set_etag("/big.bin", "fixed")
        assert (await fetch(server.url("/big.bin")))[1]["ETag"] == '"fixed"'


async def test_status_faults_are_consumed_in_order(srv):
    srv.add_fault(Fault(status=503, retry_after="2", times=2))
    srv.add_fault(Fault(status=429, headers={"RateLimit": '"api";r=0;t=1'}))
    seen = [await fetch(srv.url("/f.bin")) for _ in range(4)]
    assert [s[0] for s in seen] == [503, 503, 429, 200]
    assert seen[0][1]["Retry-After"] == "2" and seen[2][1]["RateLimit"] == '"api";r=0;t=1'
    assert [f.hits for f in srv.faults] == [2, 1]


async def test_fault_matching_by_offset_and_range(srv):
    srv.add_fault(Fault(status=500, match_offset=1000, times=-1))
    srv.add_fault(Fault(status=408, only_ranged=True))
    assert (await fetch(srv.url("/f.bin")))[0] == 200  # unranged: neither applies
    assert (await fetch(srv.url("/f.bin"), {"Range": "bytes=1000-1999"}))[0] == 500
    assert (await fetch(srv.url("/f.bin"), {"Range": "bytes=1000-"}))[0] == 500
    assert (await fetch(srv.url("/f.bin"), {"Range": "bytes=0-9"}))[0] == 408
    assert (await fetch(srv.url("/f.bin"), {"Range": "bytes=0-9"}))[0] == 206


async def test_range_lies(srv):
    srv.add_fault(Fault(ignore_range=True))
    status, headers, body, _ = await fetch(srv.url("/f.bin"), {"Range": "bytes=10-19"})
    assert (status, body, "Content-Range" in headers) == (200, DATA, False)
    srv.add_fault(Fault(wrong_content_range=True))
    status, headers, body, _ = await fetch(srv.url("/f.bin"), {"Range": "bytes=10-19"})
    assert status == 206 and headers["Content-Range"] == f"bytes 11-20/{len(DATA)}"
    assert body == DATA[11:21]


async def test_reset_and_short_body(srv):
    srv.add_fault(Fault(reset_after=70_000))
    _, _, body, error = await fetch(srv.url("/f.bin"))
    assert body == DATA[:70_000] and error is not None
    assert srv.requests[-1].outcome == "reset" and srv.requests[-1].bytes_sent == 70_000
    srv.add_fault(Fault(short_body=True))
    _, headers, body, error = await fetch(srv.url("/f.bin"), {"Range": "bytes=0-999"})
    assert headers["Content-Length"] == "1000" and body == DATA[:500] and error is not None
    assert (await fetch(srv.url("/f.bin")))[2] == DATA  # later requests are clean


async def test_stall_then_continue_or_close(srv):
    srv.add_fault(Fault(stall_after=1000, stall_seconds=0.3))
    start = time.monotonic()
    _, _, body, error = await fetch(srv.url("/f.bin"))
    assert body == DATA and error is None and time.monotonic() - start >= 0.3
    srv.add_fault(Fault(stall_after=1000, stall_seconds=0.05, close_after_stall=True))
    _, _, body, error = await fetch(srv.url("/f.bin"))
    assert body == DATA[:1000] and error is not None


async def test_stall_does_not_block_stop():
    server = RangeServer()
    await server.start()
    server.add_file("/x", DATA)
    server.add_fault(Fault(stall_after=10, stall_seconds=60))
    task = asyncio.create_task(fetch(server.url("/x")))
    await asyncio.sleep(0.2)
    start = time.monotonic()
    await server.stop()
    assert time.monotonic() - start < 5
    task.cancel()
    with pytest.raises((asyncio.CancelledError, aiohttp.ClientError)):
        await task


async def test_per_connection_and_total_rate():
    rate = 1_000_000
    async with RangeServer(per_connection_rate=rate) as server:
        server.add_file("/x", os.urandom(500_000))
        start = time.monotonic()
        await asyncio.gather(fetch(server.url("/x")), fetch(server.url("/x")))
        took = time.monotonic() - start  # two connections in parallel, 0.5 s each
        assert 0.45 <= took <= 1.0, took  # the cap holds; the upper bound only guards gross lag
        server.per_connection_rate, server.total_rate = None, rate
        start = time.monotonic()
        await asyncio.gather(fetch(server.url("/x")), fetch(server.url("/x")))
        took = time.monotonic() - start  # 1 MB shared by both at 1 MB/s
        assert 0.9 <= took <= 1.6, took


async def test_auth_modes(srv):
    srv.require_auth = "tok"
    assert (await fetch(srv.url("/f.bin")))[0] == 401
    assert (await fetch(srv.url("/f.bin"), {"Authorization": "Bearer tok"}))[0] == 200
    srv.require_auth, srv.reject_auth = None, True
    status, _, body, _ = await fetch(srv.url("/f.bin"), {"Authorization": "Bearer tok"})
    assert status == 400 and b"Only one auth mechanism allowed" in body
    assert srv.requests[-1].header("Authorization") == "Bearer tok"


async def test_signed_urls(srv):
    srv.require_signature = True
    assert (await fetch(srv.url("/f.bin")))[0] == 403
    url = srv.signed_url("/f.bin", content_disposition='attachment; filename="a.bin"')
    status, headers, body, _ = await fetch(url)
    assert (status, body) == (200, DATA)
    assert headers["Content-Disposition"] == 'attachment; filename="a.bin"'
    srv.expire_signed_urls()
    status, _, body, _ = await fetch(url)
    assert status == 403 and b"Request has expired" in body
    assert (await fetch(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")))[0] == 403


async def test_fail_next_on_any_server(srv):
    srv.fail_next("/f", 502, times=1)
    assert [(await fetch(srv.url("/f.bin")))[0] for _ in range(2)] == [502, 200]


def test_run_in_thread_serves_sync_clients():
    with run_in_thread(RangeServer()) as server:
        server.add_file("/t", b"hello")
        request = urllib.request.Request(server.url("/t"), headers={"Range": "bytes=1-3"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert (resp.status, resp.read()) == (206, b"ell")
        assert server.requests[0].remote_port > 0


# -- HubServer ---------------------------------------------------------------------------------

LFS = os.urandom(5000)


@pytest.fixture
async def hub():
    async with HubServer(page_size=5) as server:
        server.add_repo("org/model", {"config.json": b'{"a": 1}', "unet/model.safetensors": LFS,
                                      **{f"many/f{i:02}.txt": b"%d" % i for i in range(12)}})
        yield server


async def test_hub_with_huggingface_hub(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=False)
    info = await asyncio.to_thread(api.model_info, "org/model")
    assert info.sha == hub.repos[("model", "org/model")].refs["main"] and len(info.siblings) == 14
    items = await asyncio.to_thread(api.get_paths_info, "org/model",
                                    ["unet/model.safetensors", "config.json", "nope"])
    assert [i.path for i in items] == ["unet/model.safetensors", "config.json"]
    assert items[0].lfs.sha256 == hub.file("org/model", "unet/model.safetensors").sha256
    assert items[1].lfs is None and items[1].size == 8
    files = await asyncio.to_thread(api.list_repo_files, "org/model")
    assert len(files) == 14 and len(hub.requests_to("/api/models/org/model/tree")) > 2  # paged
    for name, data in (("unet/model.safetensors", LFS), ("config.json", b'{"a": 1}')):
        path = await asyncio.to_thread(hf_hub_download, "org/model", name, endpoint=hub.endpoint,
                                       cache_dir=tmp_path, token=hub.token)
        assert Path(path).read_bytes() == data
    # The token reached the Hub, never the CDN (which would refuse it, like S3).
    assert hub.requests_to("/org/model/resolve")[0].header("authorization") == f"Bearer {hub.token}"
    assert hub.cdn.requests and all(r.header("authorization") is None for r in hub.cdn.requests)


async def test_hub_resolve_for_plain_clients(hub):
    status, headers, _, _ = await fetch(hub.resolve_url("org/model", "unet/model.safetensors"),
                                        method="HEAD", redirects=False)
    f = hub.file("org/model", "unet/model.safetensors")
    assert status == 302 and headers["X-Linked-Etag"] == f'"{f.sha256}"'
    assert headers["X-Linked-Size"] == str(len(LFS)) and headers["Location"].startswith(
        hub.cdn.base_url)
    assert headers["X-Repo-Commit"] == hub.repos[("model", "org/model")].refs["main"]
    status, headers, body, _ = await fetch(hub.resolve_url("org/model", "config.json"),
                                           {"Range": "bytes=1-3"})
    assert (status, body) == (206, b'"a"')
    status, _, body, _ = await fetch(hub.resolve_url("org/model", "unet/model.safetensors"),
                                     {"Range": "bytes=0-99"})
    assert (status, body) == (206, LFS[:100])  # followed to the CDN


@pytest.mark.parametrize("url_path,token,status,code", [
    ("/org/nope/resolve/main/x", None, 401, "RepoNotFound"),
    ("/org/model/resolve/main/nope", None, 404, "EntryNotFound"),
    ("/org/model/resolve/v9/config.json", None, 404, "RevisionNotFound"),
    ("/org/gated/resolve/main/w.bin", None, 401, "GatedRepo"),
    ("/org/gated/resolve/main/w.bin", "hf_other", 403, "GatedRepo"),
    ("/org/private/resolve/main/w.bin", None, 401, "RepoNotFound"),
    ("/org/private/resolve/main/w.bin", "hf_other", 404, "RepoNotFound"),
    ("/org/model/resolve/main/config.json", "hf_bogus", 401, None),
])
async def test_hub_errors(hub, url_path, token, status, code):
    hub.valid_tokens.add("hf_other")
    hub.add_repo("org/gated", {"w.bin": LFS}, gated=True)
    hub.add_repo("org/private", {"w.bin": LFS}, private_token="hf_private")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    got, hdrs, _, _ = await fetch(hub.url(url_path), headers, redirects=False)
    assert (got, hdrs.get("X-Error-Code")) == (status, code)


async def test_hub_commits_and_injected_rate_limit(hub):
    old = hub.repos[("model", "org/model")].refs["main"]
    new = hub.add_commit("org/model", {"config.json": b"{}"})
    assert new != old
    assert (await fetch(hub.resolve_url("org/model", "config.json", old)))[2] == b'{"a": 1}'
    assert (await fetch(hub.resolve_url("org/model", "config.json")))[2] == b"{}"
    hub.fail_next("/api/models/org/model", 429, {"RateLimit": '"api";r=0;t=1'})
    status, headers, _, _ = await fetch(hub.url("/api/models/org/model"))
    assert status == 429 and headers["RateLimit"] == '"api";r=0;t=1'
    assert (await fetch(hub.url("/api/models/org/model")))[0] == 200


# -- CivitaiServer -----------------------------------------------------------------------------


async def test_civitai_api_and_download():
    async with CivitaiServer() as civ:
        civ.add_version(456, 123, [CivitaiFile(1, "m.safetensors", DATA, primary=True),
                                   CivitaiFile(2, "vae.safetensors", b"v" * 2048, type="VAE")])
        status, _, body, _ = await fetch(civ.url("/api/v1/model-versions/456"))
        version = json.loads(body)
        f = version["files"][0]
        assert status == 200 and f["sizeKB"] * 1024 == len(DATA) and f["primary"] is True
        assert f["hashes"]["SHA256"] == f["hashes"]["SHA256"].upper()
        assert f["hashes"]["AutoV2"] == f["hashes"]["SHA256"][:10]
        assert version["model"]["name"] and version["downloadUrl"].endswith("/models/456")
        status, headers, _, _ = await fetch(civ.url("/api/download/models/456", fileId=2),
                                            redirects=False)
        assert status == 307 and headers["Location"].startswith(civ.storage.base_url)
        token = {"Authorization": f"Bearer {civ.token}"}
        status, headers, body, _ = await fetch(civ.url("/api/download/models/456", fileId=2), token)
        assert (status, body) == (200, b"v" * 2048)
        assert headers["Content-Disposition"] == 'attachment; filename="vae.safetensors"'
        assert civ.requests[-1].header("authorization") == f"Bearer {civ.token}"
        assert civ.storage.requests[-1].header("authorization") is None
        assert (await fetch(civ.url("/api/v1/models/9")))[0] == 404


async def test_civitai_refusals():
    async with CivitaiServer() as civ:
        civ.add_version(1, 10, [CivitaiFile(5, "a.bin", b"a", primary=True)], login_required=True)
        civ.add_version(2, 10, [CivitaiFile(6, "b.bin", b"b", primary=True)], early_access=True)
        status, headers, _, _ = await fetch(civ.url("/api/download/models/1"), redirects=False)
        assert status == 307 and "reason=download-auth" in headers["Location"]
        status, _, body, _ = await fetch(civ.url("/api/download/models/1"),
                                         {"Content-Type": "application/json"})
        assert (status, body) == (401, b'{"error":"Unauthorized"}')
        status, _, body, _ = await fetch(civ.url("/api/download/models/2"))
        assert status == 403 and b'"Early Access"' in body
        status, _, body, _ = await fetch(civ.url("/api/download/models/1"))  # follows to /login
        assert status == 200 and b"Sign in" in body
        status, _, body, _ = await fetch(civ.url("/api/v1/models/10"))
        assert status == 200
        assert [v["id"] for v in json.loads(body)["modelVersions"]] == [2, 1]  # newest first
