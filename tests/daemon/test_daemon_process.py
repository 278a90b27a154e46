"""Real ``modelmgr daemon`` / ``sync`` / ``status`` processes against the loopback Hub, with
systemd's notify socket played by the test."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp

from modelmgr.daemon.reconcile import LOCKS_DIR
from modelmgr.daemon.volume_lock import Holder
from tests.download.helpers import wait_until_saved
from modelmgr.errors import ExitCode
from modelmgr.library.layout import STATE_DIR
from tests.procs import run_cli

from .conftest import (BF16, BLOBS, FP8, TE, VAE, World, cdn_bytes, cdn_probes, child_env,
                       write_config)

KiB = 1024


async def _saved_bytes(world: World, relpath: str, at_least: int, timeout: float = 20) -> int:
    """Wait until the resume sidecar of a download claims ``at_least`` bytes."""
    saved = await wait_until_saved(world.root / (relpath + ".partial"), at_least, timeout)
    if saved < at_least:
        raise AssertionError(f"{relpath}: the download never got going")
    return saved


def _leases(world: World) -> list:
    folder = world.root / STATE_DIR / LOCKS_DIR
    return sorted(folder.glob("*.lease")) if folder.is_dir() else []


async def test_ready_watchdog_a_full_cycle_metrics_status_and_a_clean_stop(
        tmp_path, world, notify_socket, procs):
    world.root.mkdir()
    cfg = write_config(tmp_path / "modelmgr.yaml", world, ["bf16-tiny"],
                       metrics={"listen": "127.0.0.1:0"})
    env = child_env(world, NOTIFY_SOCKET=notify_socket.name, WATCHDOG_USEC="400000")
    daemon = await procs("daemon", "--config", str(cfg), env=env)
    ready = await notify_socket.wait_for("READY", "1")
    assert "first cycle" in ready["STATUS"]
    done = await daemon.wait_event("cycle.done")
    assert done["ok"] == "true" and int(done["fetched"]) > 0
    await notify_socket.wait_for("STATUS", "cycle 1 ok; 1/1 bundle(s) in place")
    await asyncio.sleep(0.5)
    pings = [t for t, _ in notify_socket.with_key("WATCHDOG")]
    assert len(pings) >= 3 and max(b - a for a, b in zip(pings, pings[1:])) < 0.4
    for rel in (BF16, TE, VAE):
        assert (world.root / rel).read_bytes() == world.files[BLOBS[rel]]

    address = (await daemon.wait_event("metrics.listening"))["address"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address}/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    metrics = dict(line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    assert int(metrics["modelmgr_bytes_pulled_total"]) == int(done["fetched"])
    assert metrics["modelmgr_files_missing"] == "0" and metrics["modelmgr_failures_total"] == "0"
    assert float(metrics["modelmgr_last_success_timestamp_seconds"]) > time.time() - 60

    code, out, err = await run_cli("status", "--json", env=dict(env, MODELMGR_CONFIG=str(cfg)))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["missing"] == [] and doc["wanted"] == ["bf16-tiny"]
    assert [(c["cycle"], c["trigger"], c["ok"]) for c in doc["cycles"]] == [(1, "start", True)]

    code, seconds = await daemon.stop(signal.SIGTERM)
    assert code == 0 and seconds < 10
    await notify_socket.wait_for("STOPPING", "1")
    assert daemon.events("daemon.stop")
    assert all("\x1b" not in line and line.count("\n") == 1 for line in daemon.out)


async def test_sigterm_mid_pull_keeps_the_partial_and_a_restart_resumes(
        tmp_path, world, notify_socket, procs):
    world.root.mkdir()
    cfg = write_config(tmp_path / "modelmgr.yaml", world, ["bf16-tiny"],
                       downloads={"connections": 2})
    env = child_env(world, NOTIFY_SOCKET=notify_socket.name)
    size = len(world.files[BLOBS[BF16]])
    world.hub.cdn.per_connection_rate = 96 * KiB
    daemon = await procs("daemon", "--config", str(cfg), env=env)
    saved = await _saved_bytes(world, BF16, 128 * KiB)
    assert (await daemon.wait_event("download.progress", file=BF16))["status"] == "downloading"
    code, seconds = await daemon.stop(signal.SIGTERM)
    assert code == 0 and seconds < 10, daemon.err.getvalue()
    assert not (world.root / BF16).exists() and (world.root / (BF16 + ".partial")).exists()
    assert _leases(world) == []  # released on the way out
    assert (await daemon.wait_event("cycle.done"))["interrupted"] == "true"

    sync = await procs("sync", "--config", str(cfg), env=env)  # the timer's unit being stopped
    saved = await _saved_bytes(world, BF16, saved + 64 * KiB)
    code, seconds = await sync.stop(signal.SIGTERM)
    assert code == ExitCode.INTERRUPTED and seconds < 10, sync.err.getvalue()
    assert "partial downloads are kept" in sync.err.getvalue() and _leases(world) == []

    world.hub.cdn.per_connection_rate = None
    world.hub.cdn.clear_log()
    again = await procs("daemon", "--config", str(cfg), env=env)
    done = await again.wait_event("cycle.done")
    assert done["ok"] == "true", again.text
    assert (world.root / BF16).read_bytes() == world.files[BLOBS[BF16]]
    assert cdn_bytes(world, BF16) <= size - saved + 1  # only the rest (plus a 1-byte probe)
    assert (await again.stop())[0] == 0


async def test_two_daemons_on_one_volume_fetch_each_file_once(tmp_path, world, procs):
    world.root.mkdir()
    world.hub.cdn.per_connection_rate = 256 * KiB
    env = child_env(world)
    daemons = []
    for name in ("node-a", "node-b"):
        cfg = write_config(tmp_path / f"{name}.yaml", world, ["bf16-tiny", "fp8-tiny"],
                           name=name, downloads={"connections": 2})
        daemons.append(await procs("daemon", "--config", str(cfg), env=env))
    for daemon in daemons:
        assert (await daemon.wait_event("cycle.done", timeout=40))["ok"] == "true", daemon.text
    for rel in (BF16, FP8, TE, VAE):
        size = len(world.files[BLOBS[rel]])
        assert cdn_probes(world, rel) == 1, rel  # one download started, by one daemon
        assert size <= cdn_bytes(world, rel) <= size + 1, rel
        assert (world.root / rel).read_bytes() == world.files[BLOBS[rel]]
    assert any(d.events("lock.wait") for d in daemons)  # they did compete for the files
    downloaded = [e["todo"] for d in daemons for e in d.events("bundle.pull")]
    assert sorted(",".join(downloaded).split(",")) == sorted([BF16, FP8, TE, VAE])
    for daemon in daemons:
        assert (await daemon.stop())[0] == 0


async def test_a_killed_holders_lease_is_recovered_after_the_lease(tmp_path, world, procs):
    world.root.mkdir()
    cfg = write_config(tmp_path / "modelmgr.yaml", world, ["bf16-tiny"],
                       downloads={"connections": 2})
    env = child_env(world)
    size = len(world.files[BLOBS[BF16]])
    world.hub.cdn.per_connection_rate = 96 * KiB
    holder = await procs("daemon", "--config", str(cfg), env=env)
    saved = await _saved_bytes(world, BF16, 128 * KiB)
    await holder.stop(signal.SIGKILL)
    leases = _leases(world)
    assert leases, "the killed daemon held no lease"
    for path in leases:  # make it another machine's: only the lease can prove it dead
        record = Holder.decode(path.read_bytes())
        path.write_bytes(Holder(**dict(record.__dict__, host="another-host")).encode())

    world.hub.cdn.per_connection_rate = None
    world.hub.cdn.clear_log()
    started = time.monotonic()
    sync = await procs("sync", "--config", str(cfg), env=env)
    code = await sync.wait(30)
    assert code == 0, sync.text + sync.err.getvalue()
    assert time.monotonic() - started >= 1.0  # waited out the 1 s lease
    assert sync.events("lock.wait")[0]["holder"].endswith("on another-host")
    assert "no heartbeat" in sync.events("lock.takeover")[0]["reason"]
    assert (world.root / BF16).read_bytes() == world.files[BLOBS[BF16]]
    assert cdn_bytes(world, BF16) <= size - saved + 1  # resumed the dead holder's partial
    assert _leases(world) == []


async def test_sighup_reloads_adds_a_bundle_and_a_bad_reload_keeps_the_old_config(
        tmp_path, world, procs):
    world.root.mkdir()
    cfg = write_config(tmp_path / "modelmgr.yaml", world, ["bf16-tiny"])
    daemon = await procs("daemon", "--config", str(cfg), env=child_env(world))
    await daemon.wait_event("cycle.done")
    assert not (world.root / FP8).exists()
    write_config(cfg, world, ["bf16-tiny", "fp8-tiny"])
    daemon.proc.send_signal(signal.SIGHUP)
    assert (await daemon.wait_event("config.reloaded"))["bundles"] == "bf16-tiny,fp8-tiny"
    second = await daemon.wait_event("cycle.start", count=2)
    assert second["trigger"] == "reload"
    assert (await daemon.wait_event("cycle.done", count=2))["ok"] == "true"
    assert (world.root / FP8).read_bytes() == world.files[BLOBS[FP8]]

    write_config(cfg, world, ["bf16-tiny"], interval="soon")
    daemon.proc.send_signal(signal.SIGHUP)
    rejected = await daemon.wait_event("config.rejected")
    assert "interval: 'soon' is not a duration" in rejected["error"]
    assert daemon.proc.returncode is None
    assert (await daemon.stop())[0] == 0


async def test_a_bad_config_exits_2_and_names_the_field(tmp_path, world):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"root: {world.root}\nbundles: [bf16-tiny]\ninterval: soon\n")
    env = child_env(world)
    for command in ("daemon", "sync"):
        code, out, err = await run_cli(command, "--config", str(bad), env=env)
        assert code == ExitCode.USAGE == 2, (out, err)
        assert f"{bad}:3: interval: 'soon' is not a duration" in err
    code, _, err = await run_cli("daemon", env=env)
    assert code == 2 and "MODELMGR_CONFIG" in err
    code, _, err = await run_cli("daemon", env=dict(env, MODELMGR_CONFIG=str(bad)))
    assert code == 2 and "interval" in err


async def test_sync_and_status_report_success_and_failures(tmp_path, world):
    world.root.mkdir()
    env = child_env(world)
    good = write_config(tmp_path / "good.yaml", world, ["bf16-tiny"], name="cron")
    code, out, err = await run_cli("sync", "--config", str(good), "--json", env=env)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["trigger"] == "sync" and doc["bundles"][0]["state"] == "installed"
    assert "event=cycle.done" in err  # --json: the log lines go to stderr

    liar = write_config(tmp_path / "liar.yaml", world, ["bf16-tiny", "nvfp4-liar"], name="cron")
    code, out, err = await run_cli("sync", "--config", str(liar), env=env)
    assert code == ExitCode.BAD_FILE, out + err
    assert "event=file.failed" in out and "nvfp4" in out

    code, out, err = await run_cli("status", "--config", str(liar), "--json", env=env)
    assert code == 0, err
    doc = json.loads(out)
    assert not doc["ok"]
    assert [m["path"] for m in doc["missing"]] == ["diffusion_models/tiny_liar.safetensors"]
    [failure] = doc["failures"]
    assert failure["bundle"] == "nvfp4-liar" and "nvfp4" in failure["error"]["message"]
    assert [(c["cycle"], c["ok"]) for c in doc["cycles"]] == [(1, True), (2, False)]
    code, out, _ = await run_cli("status", "--config", str(liar), env=env)
    assert code == 0 and "nvfp4-liar" in out and "FAILED" in out
    code, out, _ = await run_cli("status", "--root", str(world.root), "--json", env=env)
    assert code == 0 and json.loads(out)["wanted"] is None
