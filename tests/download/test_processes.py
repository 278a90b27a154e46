"""Real ``modelmgr pull`` processes: killed with SIGKILL and resumed; two at once on one file."""

from __future__ import annotations

import asyncio
import json
import signal

from tests.procs import run_cli, start_cli
from tests.servers.ranges import RangeServer

from .helpers import KiB, MiB, payload, read, saved_bytes, sha256, wait_until_saved

DATA = payload(8 * MiB, seed=7)


async def test_sigkill_midway_then_rerun_fetches_less_and_verifies(tmp_path):
    async with RangeServer(per_connection_rate=512 * KiB) as srv:
        srv.add_file("/big.bin", DATA)
        args = ("pull", "url", srv.url("/big.bin"), "--sha256", sha256(DATA), "--dest",
                str(tmp_path), "--connections", "4", "--json")
        proc = await start_cli(*args)
        saved = await wait_until_saved(tmp_path / "big.bin.partial", 1 * MiB)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert saved >= 1 * MiB, "the pull never got going"
        assert not (tmp_path / "big.bin").exists()
        first_run_bytes = srv.bytes_sent

        srv.per_connection_rate = None
        srv.clear_log()
        code, out, err = await run_cli(*args)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["ok"] and doc["files"][0]["resumed_from"] >= saved
        assert doc["files"][0]["hashes"]["sha256"] == sha256(DATA)
        assert read(tmp_path / "big.bin") == DATA
        refetched = sum(r.bytes_sent for r in srv.requests if r.range != "bytes=0-0")
        assert refetched < len(DATA), (refetched, first_run_bytes)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


async def test_two_processes_on_one_target_fetch_it_once(tmp_path):
    async with RangeServer(per_connection_rate=2 * MiB) as srv:
        srv.add_file("/big.bin", DATA)
        args = ("pull", "url", srv.url("/big.bin"), "--sha256", sha256(DATA), "--dest",
                str(tmp_path), "--connections", "4", "--json")
        first = await start_cli(*args)
        await asyncio.sleep(0.3)
        second = await start_cli(*args)
        out1, _ = await asyncio.wait_for(first.communicate(), 60)
        out2, err2 = await asyncio.wait_for(second.communicate(), 60)
        assert first.returncode == 0 and second.returncode == 0, err2
        statuses = sorted(json.loads(o)["files"][0]["status"] for o in (out1, out2))
        assert statuses == ["downloaded", "present"]
        data_bytes = sum(r.bytes_sent for r in srv.requests if r.range != "bytes=0-0")
        assert data_bytes < 2 * len(DATA)
        assert read(tmp_path / "big.bin") == DATA


async def test_ctrl_c_keeps_a_resumable_partial_and_says_so(tmp_path):
    async with RangeServer(per_connection_rate=256 * KiB) as srv:  # the pull would take 16 s
        srv.add_file("/big.bin", DATA)
        proc = await start_cli("pull", "url", srv.url("/big.bin"), "--dest", str(tmp_path),
                               "--connections", "2")
        partial = tmp_path / "big.bin.partial"
        await wait_until_saved(partial, 256 * KiB, seconds=10)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        shown = f"exit {proc.returncode}\nstdout: {out.decode()}\nstderr: {err.decode()}"
        assert proc.returncode == 130, shown
        assert "resume" in err.decode() and "Traceback" not in err.decode(), shown
        assert saved_bytes(partial) >= 256 * KiB
        assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.bin.lock").exists()
