"""Reconcile cycles in-process against the loopback Hub: pulls, new pinned revisions, deep-verify
repair, pruning, unknown bundles, an unmounted root, and files another machine holds."""

from __future__ import annotations

import asyncio
import io
import json
import os

from modelmgr.daemon.config import DaemonConfig, load_config
from modelmgr.daemon.cycles import CycleStore
from modelmgr.daemon.events import EventLog
from modelmgr.daemon.reconcile import LOCKS_DIR, run_cycle
from modelmgr.daemon.status import volume_status
from modelmgr.daemon.volume_lock import Identity, LeaseLocks
from modelmgr.download.finalize import QUARANTINE_DIR
from modelmgr.errors import ExitCode
from modelmgr.library.library import Library
from modelmgr.library.layout import STATE_DIR
from tests.fixtures.model_files import as_dtype, vae_layout, write_any
from tests.library.conftest import REPO, bundle_yaml
from tests.procs import FAST_ENV

from .conftest import BF16, FP8, TE, VAE, World, events, write_config


def config(tmp_path, world: World, bundles: list[str], **extra) -> DaemonConfig:
    return load_config(write_config(tmp_path / "modelmgr.yaml", world, bundles, **extra))


def env_of(world: World) -> dict[str, str]:
    return dict(FAST_ENV, HF_ENDPOINT=world.hub.endpoint, MODELMGR_BUNDLES=str(world.bundles_dir))


async def cycle(cfg: DaemonConfig, world: World, *, retry_failed: bool = False):
    out = io.StringIO()
    report = await run_cycle(cfg, env_of(world), EventLog(out, journal=False), trigger="sync",
                             retry_failed=retry_failed)
    return report, out.getvalue()


async def test_a_cycle_installs_the_wanted_bundles_and_the_next_is_free(tmp_path, world):
    world.root.mkdir()
    cfg = config(tmp_path, world, ["bf16-tiny", "fp8-tiny"])
    report, log = await cycle(cfg, world)
    assert report.ok and report.exit_code == 0, log
    assert {b.name: b.state for b in report.bundles.values()} == {
        "bf16-tiny": "installed", "fp8-tiny": "installed"}
    assert sorted(report.bundles["fp8-tiny"].downloaded) == [FP8]  # shared files came once
    assert report.missing == [] and report.verify[0]["mode"] == "quick"
    for rel in (BF16, FP8, TE, VAE):
        assert (world.root / rel).is_file()
    assert events(log, "cycle.done")[0]["ok"] == "true"

    world.hub.clear_log()
    world.hub.cdn.clear_log()
    again, _ = await cycle(cfg, world)
    assert again.ok and {b.state for b in again.bundles.values()} == {"in-place"}
    assert world.hub.requests == [] and world.hub.cdn.requests == []
    assert again.verify[0]["checked"] == 4 and again.verify[0]["problems"] == []
    records = CycleStore(world.root, cfg.name).load()["cycles"]
    assert [c["cycle"] for c in records] == [1, 2] and records[-1]["ok"]
    assert not list((world.root / STATE_DIR / LOCKS_DIR).iterdir())
    doc = volume_status(world.root, env_of(world), cfg)
    assert doc["ok"] and doc["missing"] == [] and doc["failures"] == []
    assert doc["daemons"][0]["last_cycle"] == 2


async def test_an_unmounted_root_fails_the_cycle_and_is_never_created(tmp_path, world):
    cfg = config(tmp_path, world, ["bf16-tiny"])
    report, log = await cycle(cfg, world)
    assert not report.ok and report.exit_code == ExitCode.NOT_FOUND
    assert "does not exist" in report.error["message"] and "mount" in report.error["hint"]
    assert not world.root.exists()
    assert events(log, "cycle.error")


async def test_a_new_pinned_revision_is_pulled_and_unchanged_files_are_not(tmp_path, world):
    world.root.mkdir()
    cfg = config(tmp_path, world, ["bf16-tiny"])
    assert (await cycle(cfg, world))[0].ok
    new_vae = write_any(tmp_path / "vae2.safetensors", as_dtype(vae_layout(latent=16), "BF16"),
                        metadata={"revision": "2"}).read_bytes()
    commit = world.hub.add_commit(REPO, {"split_files/vae/ae.safetensors": new_vae},
                                  lfs_threshold=1)
    (world.bundles_dir / "bf16-tiny.yaml").write_text(
        bundle_yaml("bf16-tiny", commit, "tiny_bf16.safetensors", "bf16"))
    world.hub.cdn.clear_log()
    report, log = await cycle(cfg, world)
    assert report.ok, log
    assert report.bundles["bf16-tiny"].state == "installed"
    assert report.bundles["bf16-tiny"].downloaded == [VAE]
    assert report.bundles["bf16-tiny"].fetched == len(new_vae)
    assert (world.root / VAE).read_bytes() == new_vae
    library = Library(world.root)
    try:
        assert library.registry.get(VAE).revision == commit
        assert library.registry.get(BF16).source.startswith(f"hf:{REPO}@{commit}/")
    finally:
        library.close()


async def test_deep_verify_when_due_finds_damage_and_the_cycle_repairs_it(tmp_path, world):
    world.root.mkdir()
    cfg = config(tmp_path, world, ["bf16-tiny"], verify={"deep_every": "1h"})
    first, _ = await cycle(cfg, world)
    assert [v["mode"] for v in first.verify] == ["quick"]  # fresh downloads were hashed
    vae = world.root / VAE
    data = bytearray(vae.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: size, mtime and header all still match
    st = vae.stat()
    vae.write_bytes(bytes(data))
    os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns))
    store = CycleStore(world.root, cfg.name)
    doc = store.load()
    doc["deep_verified_at"] = doc["cycles"][0]["started"] - 7200  # make the deep pass due
    store.path.write_text(json.dumps(doc))
    report, log = await cycle(cfg, world)
    assert [v["mode"] for v in report.verify] == ["quick", "deep"]
    assert report.verify[0]["problems"] == []  # a quick check cannot see it
    assert [p["status"] for p in report.verify[1]["problems"]] == ["mismatch"]
    assert report.ok and report.bundles["bf16-tiny"].downloaded == [VAE], log
    assert vae.read_bytes() == world.files["split_files/vae/ae.safetensors"]
    assert store.load()["deep_verified_at"] == report.finished
    assert not store.deep_due(cfg.deep_every)


async def test_prune_is_off_by_default_and_only_deletes_what_modelmgr_installed(tmp_path, world):
    world.root.mkdir()
    assert (await cycle(config(tmp_path, world, ["bf16-tiny", "fp8-tiny"]), world))[0].ok
    own = world.root / "loras" / "mine.safetensors"
    own.parent.mkdir()
    own.write_bytes(world.files["split_files/text_encoders/clip_l.safetensors"])
    library = Library(world.root)
    library.scan()  # recorded, but not installed by modelmgr
    library.close()

    report, _ = await cycle(config(tmp_path, world, ["fp8-tiny"]), world)
    assert report.ok and report.pruned == [] and (world.root / BF16).exists()

    failing = config(tmp_path, world, ["fp8-tiny", "nvfp4-liar"], prune={"enabled": True})
    report, log = await cycle(failing, world)
    assert not report.ok and report.pruned == [] and (world.root / BF16).exists()
    assert events(log, "prune.skipped")

    report, log = await cycle(config(tmp_path, world, ["fp8-tiny"], prune={"enabled": True}),
                              world)
    assert report.ok and report.pruned == [BF16], log
    assert not (world.root / BF16).exists()
    for kept in (FP8, TE, VAE):  # shared with the wanted bundle
        assert (world.root / kept).exists()
    assert own.exists()
    library = Library(world.root)
    try:
        assert set(library.registry.installed_bundles()) == {"fp8-tiny"}
    finally:
        library.close()


async def test_an_unknown_bundle_fails_alone(tmp_path, world):
    world.root.mkdir()
    report, _ = await cycle(config(tmp_path, world, ["bf16-tinny", "bf16-tiny"]), world)
    assert report.bundles["bf16-tiny"].state == "installed"
    bad = report.bundles["bf16-tinny"]
    assert bad.state == "failed" and "bf16-tiny" in bad.error["hint"]
    assert report.exit_code == ExitCode.NOT_FOUND
    doc = volume_status(world.root, env_of(world), config(tmp_path, world, ["bf16-tinny"]))
    assert doc["missing"][0]["state"] == "unknown"
    assert doc["failures"][0]["bundle"] == "bf16-tinny"


def _other_machine(world: World, lease: float) -> LeaseLocks:
    return LeaseLocks(world.root / STATE_DIR / LOCKS_DIR, lease,
                      identity=Identity("another-host", 99, "boot-x", "pid:[1]"))


async def test_files_another_machine_holds_are_waited_for_and_taken_over_when_it_dies(
        tmp_path, world):
    world.root.mkdir()
    other = _other_machine(world, 1.0)
    assert other.try_acquire(VAE) is not None  # and then it dies: no heartbeat
    report, log = await cycle(config(tmp_path, world, ["bf16-tiny"]), world)
    assert report.ok, log
    assert events(log, "lock.wait")[0]["holder"] == "pid 99 on another-host"
    takeover = events(log, "lock.takeover")[0]
    assert takeover["key"] == VAE and "no heartbeat" in takeover["reason"]


async def test_a_live_holder_is_waited_for_until_locks_wait(tmp_path, world):
    world.root.mkdir()
    other = _other_machine(world, 1.0)
    lease = other.try_acquire(VAE)

    async def heartbeat():
        while True:
            await asyncio.sleep(0.2)
            other.renew(lease)

    beating = asyncio.create_task(heartbeat())
    try:
        cfg = config(tmp_path, world, ["bf16-tiny", "fp8-tiny"],
                     locks={"lease": "1s", "wait": "1s"})
        report, log = await cycle(cfg, world)
    finally:
        beating.cancel()
    assert {b.state for b in report.bundles.values()} == {"waiting"}
    assert report.exit_code == ExitCode.LOCKED
    assert "another-host" in report.bundles["bf16-tiny"].error["message"]
    assert not (world.root / BF16).exists()  # all or nothing: no file of it was fetched
    assert not events(log, "lock.takeover")


async def test_a_bundle_whose_bytes_failed_is_held_back_until_asked_or_changed(tmp_path, world):
    world.root.mkdir()
    cfg = config(tmp_path, world, ["nvfp4-liar"])
    first, _ = await cycle(cfg, world)
    assert first.bundles["nvfp4-liar"].error["exit_code"] == ExitCode.BAD_FILE
    quarantine = world.root / "diffusion_models" / QUARANTINE_DIR
    copies = len(list(quarantine.iterdir()))
    world.hub.clear_log()
    world.hub.cdn.clear_log()
    held, log = await cycle(cfg, world)  # the same wrong bytes again? no: held back
    assert held.bundles["nvfp4-liar"].held and held.exit_code == ExitCode.BAD_FILE
    assert "nvfp4" in held.bundles["nvfp4-liar"].error["message"]
    assert world.hub.cdn.requests == [] and len(list(quarantine.iterdir())) == copies
    assert events(log, "bundle.held")[0]["level"] == "warning"
    asked, _ = await cycle(cfg, world, retry_failed=True)
    assert not asked.bundles["nvfp4-liar"].held and world.hub.cdn.requests
    # the bundle is fixed (here: it now declares what the file is): tried again by itself
    (world.bundles_dir / "nvfp4-liar.yaml").write_text(
        bundle_yaml("nvfp4-liar", world.commit, "tiny_liar.safetensors", "bf16"))
    fixed, log = await cycle(cfg, world)
    assert fixed.ok, log
