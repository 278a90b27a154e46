"""``pull bundle`` end to end against the loopback Hub, and the library operations after it."""

from __future__ import annotations

import json
import os
import time

import pytest

from modelmgr.errors import BadFileError, ExitCode, NotFoundError, UsageError
from modelmgr.download.finalize import QUARANTINE_DIR as QUARANTINE
from tests.procs import cli_env, run_cli

from .conftest import World

TE = "text_encoders/clip_l.safetensors"
VAE = "vae/ae.safetensors"


async def test_install_two_bundles_shares_files_and_second_pull_is_a_noop(world: World):
    manager = world.manager()
    first = await manager.install_bundle("bf16-tiny")
    assert first.ok, [f.error for f in first.files]
    assert {f.relpath: f.state for f in first.files} == {
        "diffusion_models/tiny_bf16.safetensors": "downloaded", TE: "downloaded",
        VAE: "downloaded"}
    for rel, data in (("diffusion_models/tiny_bf16.safetensors",
                       world.files["split_files/diffusion_models/tiny_bf16.safetensors"]),
                      (VAE, world.files["split_files/vae/ae.safetensors"])):
        assert (world.root / rel).read_bytes() == data

    second = await manager.install_bundle("fp8-tiny")
    assert second.ok
    states = {f.relpath: f.state for f in second.files}
    assert states[TE] == "present" and states[VAE] == "present"
    assert states["diffusion_models/tiny_fp8_scaled.safetensors"] == "downloaded"
    # the shared files went over the wire once
    assert world.cdn_gets("split_files/vae/ae.safetensors") == 1
    assert world.cdn_gets("split_files/text_encoders/clip_l.safetensors") == 1

    world.hub.clear_log()
    world.hub.cdn.clear_log()
    started = time.monotonic()
    again = await world.manager().install_bundle("fp8-tiny")
    assert again.nothing_to_do and time.monotonic() - started < 1.0
    assert world.hub.requests == [] and world.hub.cdn.requests == []

    registry = manager.library.registry
    assert set(registry.installed_bundles()) == {"bf16-tiny", "fp8-tiny"}
    assert registry.bundles_using(VAE) == ["bf16-tiny", "fp8-tiny"]
    fp8 = registry.get("diffusion_models/tiny_fp8_scaled.safetensors")
    assert fp8.precision == "fp8-scaled" and fp8.family == "flux1" and fp8.managed
    assert fp8.sha256 and fp8.source.startswith("hf:org/tiny@")


async def test_declared_format_mismatch_never_lands(world: World):
    report = await world.manager().install_bundle("nvfp4-liar")
    assert not report.ok
    bad = next(f for f in report.files if f.relpath.endswith("tiny_liar.safetensors"))
    assert isinstance(bad.error, BadFileError)
    assert "nvfp4" in bad.error.message and "bf16" in bad.error.message
    assert not (world.root / "diffusion_models/tiny_liar.safetensors").exists()
    assert list((world.root / "diffusion_models" / QUARANTINE).iterdir())
    assert "nvfp4-liar" not in world.manager().library.registry.installed_bundles()


async def test_dry_run_plans_without_fetching(world: World):
    report = await world.manager().install_bundle("bf16-tiny", dry_run=True)
    assert report.ok and {f.state for f in report.files} == {"planned"}
    assert report.to_fetch == sum(len(world.files[p]) for p in (
        "split_files/diffusion_models/tiny_bf16.safetensors",
        "split_files/text_encoders/clip_l.safetensors", "split_files/vae/ae.safetensors"))
    assert world.hub.cdn.requests == []
    assert not (world.root / VAE).exists()


async def test_rm_keeps_shared_files_and_refuses_needed_ones(world: World):
    manager = world.manager()
    await manager.install_bundle("bf16-tiny")
    await manager.install_bundle("fp8-tiny")
    with pytest.raises(UsageError) as err:
        manager.remove(VAE)
    assert "bf16-tiny" in err.value.message
    deleted, kept = manager.remove("bf16-tiny")
    assert deleted == ["diffusion_models/tiny_bf16.safetensors"]
    assert any(VAE in k and "fp8-tiny" in k for k in kept)
    assert (world.root / VAE).exists()
    deleted, _ = manager.remove("fp8-tiny")
    assert VAE in deleted and not (world.root / VAE).exists()
    with pytest.raises(NotFoundError):
        manager.remove("nothing-here")


async def test_verify_quick_and_deep_find_changes(world: World):
    manager = world.manager()
    await manager.install_bundle("bf16-tiny")
    assert manager.verify().ok
    vae = world.root / VAE
    data = bytearray(vae.read_bytes())
    data[-1] ^= 0xFF  # flip a byte inside the tensor data: the header still parses
    st = vae.stat()
    vae.write_bytes(bytes(data))
    os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime...
    assert manager.verify().ok  # ...a quick check cannot see it
    deep = manager.verify(deep=True)
    status = {a.path: s for a, s, _ in deep.results}
    assert status[VAE] == "mismatch" and not deep.ok
    (world.root / TE).write_bytes(b"garbage")
    quick = {a.path: s for a, s, _ in manager.verify().results}
    assert quick[TE] == "changed"
    (world.root / TE).unlink()
    assert {a.path: s for a, s, _ in manager.verify().results}[TE] == "missing"


async def test_scan_adopts_an_existing_folder_and_never_crashes(world: World, tmp_path):
    comfy = tmp_path / "ComfyUI" / "models"
    (comfy / "unet").mkdir(parents=True)
    (comfy / "loras").mkdir()
    (comfy / "unet" / "model.safetensors").write_bytes(
        world.files["split_files/diffusion_models/tiny_fp8_scaled.safetensors"])
    (comfy / "loras" / "broken.safetensors").write_bytes(b"\xff" * 64)
    (comfy / "loras" / "old.ckpt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (comfy / "loras" / "notes.txt").write_text("ignored")
    code, out, err = await run_cli("scan", str(comfy), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(doc["added"]) == ["loras/broken.safetensors", "loras/old.ckpt",
                                    "unet/model.safetensors"]
    assert [p["path"] for p in doc["problems"]] == ["loras/broken.safetensors"]
    code, out, _ = await run_cli("ls", "--root", str(comfy), "--json")
    assets = {a["path"]: a for a in json.loads(out)["assets"]}
    assert assets["unet/model.safetensors"]["precision"] == "fp8-scaled"
    assert assets["loras/old.ckpt"]["format"] == "pickle"
    assert not assets["unet/model.safetensors"]["managed"]
    code, out, _ = await run_cli("scan", str(comfy), "--json")
    assert json.loads(out)["unchanged"] == 2  # the broken one is looked at again


async def test_cli_bundles_and_pull_bundle(world: World):
    env = cli_env(HF_ENDPOINT=world.hub.endpoint, MODELMGR_ROOT=str(world.root),
                  MODELMGR_BUNDLES=str(world.bundles_dir))
    code, out, err = await run_cli("bundles", "list", "--json", env=env)
    assert code == 0, err
    names = {b["name"] for b in json.loads(out)["bundles"]}
    assert {"bf16-tiny", "fp8-tiny", "nvfp4-liar"} <= names
    code, out, err = await run_cli("pull", "bundle", "bf16-tiny", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["ok"]
    code, out, err = await run_cli("pull", "bundle", "bf16-tiny", env=env)
    assert code == 0 and "nothing to do" in out
    code, out, err = await run_cli("bundles", "show", "fp8-tiny", "--json", env=env)
    states = {f["path"]: f["state"] for f in json.loads(out)["files"]}
    assert states[VAE] == "present"
    assert states["diffusion_models/tiny_fp8_scaled.safetensors"] == "missing"
    code, out, err = await run_cli("pull", "bundle", "nvfp4-liar", env=env)
    assert code == ExitCode.BAD_FILE and "declared nvfp4" in out + err
    code, out, err = await run_cli("pull", "bundle", "bf16-tinyy", env=env)
    assert code == ExitCode.NOT_FOUND and "bf16-tiny" in err
    code, out, err = await run_cli("inspect", "bf16-tiny", "--json", env=env)
    assert code == 0
    families = {f["name"]: f["family"] for f in json.loads(out)["files"]}
    assert families[VAE] == "flux1-vae"
    code, out, err = await run_cli("verify", "--deep", "--json", env=env)
    assert code == 0 and json.loads(out)["ok"]
