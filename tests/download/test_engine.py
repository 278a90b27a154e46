"""The download engine against a real loopback range server with injected faults."""

from __future__ import annotations

import asyncio
import json

import pytest

from modelmgr.download.finalize import QUARANTINE_DIR
from modelmgr.download.progress import ProgressHub
from modelmgr.download.state import state_path
from modelmgr.errors import (AuthError, DiskSpaceError, IntegrityError, NotFoundError,
                             RemoteError, UsageError)
from modelmgr.download.engine import Engine, FileJob
from tests.servers.ranges import Fault, RangeServer

from .helpers import (KiB, MiB, fast_settings, leftovers, payload, pull_one, read, remote_for,
                      saved_bytes, sha256)

DATA = payload(2 * MiB + 12345)


@pytest.fixture
async def server():
    async with RangeServer() as srv:
        srv.add_file("/m.bin", DATA)
        yield srv


def data_requests(srv: RangeServer) -> list:
    """GETs that carried data (not the 0-0 probe)."""
    return [r for r in srv.requests if r.method == "GET" and r.range != "bytes=0-0"]


async def test_parallel_ranges_verify_and_land_atomically(server, tmp_path):
    result = await pull_one(fast_settings(connections=8), remote_for(server.url("/m.bin"), DATA),
                            tmp_path)
    assert result.error is None, result.error
    assert result.status == "downloaded"
    assert read(tmp_path / "model.safetensors") == DATA
    assert result.hashes == {"sha256": sha256(DATA)}
    ranged = data_requests(server)
    assert len({r.range for r in ranged}) >= 8  # really used several ranges
    assert all(r.headers.get("accept-encoding") == "identity" for r in server.requests)
    assert leftovers(tmp_path) == []


async def test_second_pull_finds_file_present(server, tmp_path):
    remote = remote_for(server.url("/m.bin"), DATA)
    await pull_one(fast_settings(), remote, tmp_path)
    server.clear_log()
    again = await pull_one(fast_settings(), remote, tmp_path)
    assert again.status == "present" and again.error is None
    assert server.requests == []


@pytest.mark.parametrize("fault", [
    Fault(reset_after=100 * KiB, times=3, only_ranged=True),
    Fault(status=500, times=3),
    Fault(status=503, retry_after="0", times=2),
    Fault(short_body=True, times=3, only_ranged=True),
    Fault(stall_after=50 * KiB, stall_seconds=3.0, close_after_stall=True, times=2),
], ids=["reset", "500", "503-retry-after", "short-body", "stall"])
async def test_transient_faults_are_retried_and_result_verifies(server, tmp_path, fault):
    server.add_fault(fault)
    hub = ProgressHub()
    result = await pull_one(fast_settings(connections=4), remote_for(server.url("/m.bin"), DATA),
                            tmp_path, hub)
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == DATA
    assert fault.hits >= 1


async def test_429_honours_retry_after(server, tmp_path):
    server.add_fault(Fault(status=429, retry_after="1", times=1, only_ranged=True,
                           match_offset=0))
    started = asyncio.get_running_loop().time()
    result = await pull_one(fast_settings(connections=1), remote_for(server.url("/m.bin"), DATA),
                            tmp_path)
    assert result.error is None
    # the probe (bytes=0-0) took the 429, and waited the 1 s the server asked for
    assert asyncio.get_running_loop().time() - started >= 0.9


async def test_hub_ratelimit_header_is_honoured(server, tmp_path):
    server.add_fault(Fault(status=429, headers={"RateLimit": '"resolvers";r=0;t=1'}, times=1))
    started = asyncio.get_running_loop().time()
    result = await pull_one(fast_settings(), remote_for(server.url("/m.bin"), DATA), tmp_path)
    assert result.error is None
    assert asyncio.get_running_loop().time() - started >= 0.9


async def test_ignored_range_falls_back_to_one_stream(server, tmp_path):
    server.add_fault(Fault(ignore_range=True, times=-1, only_ranged=True))
    hub = ProgressHub()
    result = await pull_one(fast_settings(connections=8), remote_for(server.url("/m.bin"), DATA),
                            tmp_path, hub)
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == DATA
    assert any("single connection" in e for e in hub.events) or len(data_requests(server)) >= 1


async def test_wrong_content_range_is_never_written(server, tmp_path):
    fault = server.add_fault(Fault(wrong_content_range=True, times=-1, only_ranged=True))
    result = await pull_one(fast_settings(connections=4), remote_for(server.url("/m.bin"), DATA),
                            tmp_path)
    # every ranged reply is shifted by one byte: nothing of it may land; the engine falls back
    # to a plain stream and still produces the right bytes
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == DATA
    assert fault.hits >= 1


async def test_hash_mismatch_quarantines_and_leaves_no_final(server, tmp_path):
    remote = remote_for(server.url("/m.bin"), DATA)
    wrong = remote.__class__(**{**remote.__dict__, "sha256": "0" * 64})
    result = await pull_one(fast_settings(), wrong, tmp_path)
    assert isinstance(result.error, IntegrityError)
    assert "0" * 64 in result.error.message and sha256(DATA) in result.error.message
    assert not (tmp_path / "model.safetensors").exists()
    kept = list((tmp_path / QUARANTINE_DIR).iterdir())
    assert len(kept) == 1 and read(kept[0]) == DATA


async def test_size_mismatch_with_source_metadata_is_an_error(server, tmp_path):
    remote = remote_for(server.url("/m.bin"), DATA)
    lying = remote.__class__(**{**remote.__dict__, "size": len(DATA) + 1})
    result = await pull_one(fast_settings(), lying, tmp_path)
    assert isinstance(result.error, RemoteError)
    assert not (tmp_path / "model.safetensors").exists()


async def interrupted_pull(srv: RangeServer, remote, dest, at_least: int) -> None:
    """Start a slow pull and cancel it (like Ctrl-C) once ``at_least`` bytes are written."""
    srv.per_connection_rate = 512 * KiB
    hub = ProgressHub()
    task = asyncio.create_task(pull_one(fast_settings(connections=2), remote, dest, hub))
    for _ in range(400):
        await asyncio.sleep(0.01)
        if hub.file(remote.name).done >= at_least:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    srv.per_connection_rate = None


async def test_cancelled_pull_resumes_and_fetches_only_the_rest(server, tmp_path):
    remote = remote_for(server.url("/m.bin"), DATA)
    await interrupted_pull(server, remote, tmp_path, 400 * KiB)
    assert not (tmp_path / "model.safetensors").exists()
    assert saved_bytes(tmp_path / "model.safetensors.partial") >= 400 * KiB
    server.clear_log()
    again = await pull_one(fast_settings(connections=2), remote, tmp_path)
    assert again.error is None and read(tmp_path / "model.safetensors") == DATA
    assert again.resumed_from >= 400 * KiB
    # fewer bytes than the file went over the wire again (a stolen tail may overshoot a little)
    assert sum(r.bytes_sent for r in data_requests(server)) < len(DATA)
    assert leftovers(tmp_path) == []


async def test_persistent_500_gives_up_with_a_clear_hint(server, tmp_path):
    server.add_fault(Fault(status=500, times=-1, only_ranged=True))
    result = await pull_one(fast_settings(connections=2, max_retries=2),
                            remote_for(server.url("/m.bin"), DATA), tmp_path)
    assert isinstance(result.error, RemoteError)
    assert "HTTP 500" in result.error.message
    assert not (tmp_path / "model.safetensors").exists()


async def test_changed_remote_between_runs_restarts_cleanly(server, tmp_path):
    remote = remote_for(server.url("/m.bin"), DATA, with_hash=False)
    await interrupted_pull(server, remote, tmp_path, 300 * KiB)
    assert (tmp_path / "model.safetensors.partial").exists()
    new = payload(len(DATA), seed=2)
    server.replace_file("/m.bin", new)  # new ETag and content, same size
    hub = ProgressHub()
    result = await pull_one(fast_settings(), remote, tmp_path, hub)
    assert result.error is None
    assert result.resumed_from == 0
    assert any("starting over" in e for e in hub.events)
    assert read(tmp_path / "model.safetensors") == new


async def test_etag_change_mid_download_restarts_once(server, tmp_path):
    # the probe (bytes=0-0) takes the first hit; the first data request stalls, then drops
    server.add_fault(Fault(stall_after=10 * KiB, stall_seconds=0.3, close_after_stall=True,
                           times=2, only_ranged=True))
    remote = remote_for(server.url("/m.bin"), DATA)

    async def flip():
        await asyncio.sleep(0.1)
        server.set_etag("/m.bin", "changed-etag")

    flipper = asyncio.create_task(flip())
    hub = ProgressHub()
    result = await pull_one(fast_settings(connections=2), remote, tmp_path, hub)
    await flipper
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == DATA
    assert any("changed" in e and "starting over" in e for e in hub.events)


async def test_not_found_and_auth_are_final(server, tmp_path):
    missing = await pull_one(fast_settings(), remote_for(server.url("/nope.bin"), DATA), tmp_path)
    assert isinstance(missing.error, NotFoundError)
    server.require_auth = "secret"
    denied = await pull_one(fast_settings(), remote_for(server.url("/m.bin"), DATA), tmp_path)
    assert isinstance(denied.error, AuthError)
    assert len([r for r in server.requests if r.path == "/m.bin"]) == 1  # no retry storm


async def test_rangeless_server_streams_once_with_size_from_the_probe(server, tmp_path):
    server.add_fault(Fault(ignore_range=True, times=-1))
    result = await pull_one(fast_settings(), remote_for(server.url("/m.bin"), DATA,
                                                        size_known=False), tmp_path)
    assert result.error is None and read(tmp_path / "model.safetensors") == DATA


async def test_free_space_is_checked_before_anything_is_fetched(server, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError) as err:
        await pull_one(fast_settings(), remote_for(server.url("/m.bin"), DATA), tmp_path)
    assert str(tmp_path) in err.value.message and "GiB" in err.value.message
    assert server.requests == []


async def test_disk_full_midway_keeps_partial(server, tmp_path, monkeypatch):
    import errno
    import os

    from modelmgr.download import transfer

    calls = {"n": 0}
    real = os.pwritev

    def flaky(fd, bufs, offset):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bufs, offset)

    monkeypatch.setattr(transfer.os, "pwritev", flaky)
    result = await pull_one(fast_settings(connections=1), remote_for(server.url("/m.bin"), DATA),
                            tmp_path)
    assert isinstance(result.error, DiskSpaceError)
    assert (tmp_path / "model.safetensors.partial").exists()
    assert not (tmp_path / "model.safetensors").exists()
    monkeypatch.setattr(transfer.os, "pwritev", real)
    again = await pull_one(fast_settings(connections=1), remote_for(server.url("/m.bin"), DATA),
                           tmp_path)
    assert again.error is None and again.resumed_from > 0


async def test_slow_tail_is_stolen_by_idle_connections(tmp_path):
    data = payload(4 * MiB)
    async with RangeServer() as srv:
        srv.add_file("/m.bin", data)
        # the second of four parts goes silent for a while after 64 KiB
        srv.add_fault(Fault(stall_after=64 * KiB, stall_seconds=3.0, times=1, only_ranged=True,
                            match_offset=1 * MiB))
        # big parts (1 MiB) so the stalled one has plenty left to split
        result = await pull_one(fast_settings(connections=4, stall_timeout=10.0,
                                              min_part_size=1 * MiB),
                                remote_for(srv.url("/m.bin"), data), tmp_path)
        assert result.error is None
        assert read(tmp_path / "model.safetensors") == data
        starts = sorted(int(r.range.split("=")[1].split("-")[0]) for r in srv.requests
                        if r.range and r.range != "bytes=0-0")
        # more ranges than the 4 initial parts: idle connections split the stalled one
        assert len(starts) > 4


async def test_limit_rate_caps_total_throughput(tmp_path):
    data = payload(2 * MiB)
    async with RangeServer() as srv:
        srv.add_file("/m.bin", data)
        started = asyncio.get_running_loop().time()
        result = await pull_one(fast_settings(limit_rate=1 * MiB, connections=4),
                                remote_for(srv.url("/m.bin"), data), tmp_path)
        elapsed = asyncio.get_running_loop().time() - started
    assert result.error is None
    assert elapsed >= 0.9  # 2 MiB at 1 MiB/s, after a burst of at most one second's worth


async def test_two_files_with_the_same_destination_are_refused(server, tmp_path):
    r = remote_for(server.url("/m.bin"), DATA)
    with pytest.raises(UsageError):
        await Engine(fast_settings()).pull([FileJob(r, tmp_path), FileJob(r, tmp_path)])


async def test_state_file_never_holds_credentials(tmp_path):
    from modelmgr.sources.base import origin_of

    async with RangeServer(require_auth="tok-SECRET-123") as srv:
        srv.add_file("/m.bin", DATA)
        remote = remote_for(srv.url("/m.bin", token="tok-SECRET-123"), DATA,
                            credential="civitai", auth_origin=origin_of(srv.base_url))
        srv.per_connection_rate = 256 * KiB
        hub = ProgressHub()
        settings = fast_settings(connections=2, civitai_token="tok-SECRET-123")
        task = asyncio.create_task(pull_one(settings, remote, tmp_path, hub))
        for _ in range(300):
            await asyncio.sleep(0.01)
            if hub.file(remote.name).done > 100 * KiB:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        text = state_path(tmp_path / "model.safetensors.partial").read_text()
        json.loads(text)
        assert "SECRET" not in text
        assert all(r.header("authorization") == "Bearer tok-SECRET-123" for r in srv.requests)


class PeakServer(RangeServer):
    """Counts the requests in flight at once (a reply is in flight until its body is sent)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.active = self.peak = 0

    async def _handle(self, request):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await super()._handle(request)
        finally:
            self.active -= 1


async def test_global_connection_cap_across_files(tmp_path):
    files = {f"/f{i}.bin": payload(1 * MiB, seed=i) for i in range(3)}
    async with PeakServer(per_connection_rate=2 * MiB) as srv:
        for path, data in files.items():
            srv.add_file(path, data)
        remotes = [remote_for(srv.url(p), d, name=p[1:]) for p, d in files.items()]
        settings = fast_settings(connections=4, max_connections=3, parallel_files=3)
        results = await Engine(settings).pull([FileJob(r, tmp_path) for r in remotes])
    assert [r.error for r in results] == [None, None, None]
    assert all(read(tmp_path / p[1:]) == d for p, d in files.items())
    assert 2 <= srv.peak <= 3  # files ran at once, but never more than 3 connections in all


async def test_empty_file(tmp_path):
    async with RangeServer() as srv:
        srv.add_file("/empty", b"")
        result = await pull_one(fast_settings(), remote_for(srv.url("/empty"), b""), tmp_path)
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == b"" and result.hashes == {"sha256": sha256(b"")}
