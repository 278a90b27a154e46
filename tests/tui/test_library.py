"""Library screen: assets grouped by folder, the detail view, verify (quick and deep), inspect,
and remove refusing a file an installed bundle needs."""

from __future__ import annotations

import os

from modelmgr_tui.app import ModelMgrApp
from modelmgr_tui.screens.modals import ConfirmScreen

from .conftest import (ainstall, details_text, modal_text, static_text, wait_for,
                       wait_for_modal)

DM = "diffusion_models/tiny_bf16.safetensors"
VAE = "vae/ae.safetensors"


def keys(app: ModelMgrApp) -> list[str]:
    return [key.value for key in app.screen.query_one("#assets").rows]


async def open_library(pilot, app: ModelMgrApp, count: int) -> None:
    await wait_for(pilot, lambda: len(keys(app)) == count, what="the library")


async def test_grouped_by_folder_with_details(tui_world, managers):
    manager = managers(tui_world)
    await ainstall(manager, "bf16-tiny")
    app = ModelMgrApp(manager, initial="library")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_library(pilot, app, 6)
        assert keys(app) == ["folder:diffusion_models", DM, "folder:text_encoders",
                             "text_encoders/clip_l.safetensors", "folder:vae", VAE]
        assert "3 file(s)" in static_text(app, "#library-summary")
        assert "diffusion_models/" in details_text(app)
        await pilot.press("down")
        text = details_text(app)
        asset = manager.library.registry.get(DM)
        for expected in ("safetensors", "bf16", "flux1:dev", f"{asset.inspection['param_count']:,}",
                         "BF16", asset.sha256, "verified on download", "bf16-tiny", "not run"):
            assert expected in text, expected


async def test_verify_quick_then_deep_finds_a_flipped_byte(tui_world, managers):
    manager = managers(tui_world)
    await ainstall(manager, "bf16-tiny")
    app = ModelMgrApp(manager, initial="library")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_library(pilot, app, 6)
        await pilot.press("v")
        await wait_for_modal(pilot, "verify")
        assert "3 files checked, quick" in modal_text(app) and "all ok" in modal_text(app)
        await pilot.press("escape")

        vae = tui_world.root / VAE
        st = vae.stat()
        data = bytearray(vae.read_bytes())
        data[-1] ^= 0xFF  # inside the tensor data: the header still parses
        vae.write_bytes(bytes(data))
        os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns))
        await pilot.press("V")
        await wait_for_modal(pilot, "deep verify")
        text = modal_text(app)
        assert f"✗ {VAE}: mismatch" in text and "1 with problems" in text
        await pilot.press("escape")
        table = app.screen.query_one("#assets")
        await wait_for(pilot, lambda: str(table.get_cell(VAE, "check")) == "mismatch",
                       what="the table to show the new verification")


async def test_inspect_and_remove_refuses_a_file_a_bundle_needs(tui_world, managers):
    manager = managers(tui_world)
    await ainstall(manager, "bf16-tiny")
    app = ModelMgrApp(manager, initial="library")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_library(pilot, app, 6)
        await pilot.press(*["down"] * 5)  # vae/ae.safetensors
        await pilot.press("i")
        await wait_for_modal(pilot, "inspect")
        assert VAE in modal_text(app) and "flux1-vae" in modal_text(app)
        await pilot.press("escape")

        await pilot.press("r")
        await wait_for_modal(pilot, "the question", ConfirmScreen)
        await pilot.press("y")
        await wait_for_modal(pilot, "the refusal")
        assert modal_text(app).startswith(f"error: {VAE} is needed by the installed bundle(s) "
                                          "bf16-tiny")
        assert (tui_world.root / VAE).exists()


async def test_remove_an_adopted_file(tui_world, managers):
    manager = managers(tui_world)
    loose = tui_world.root / "loras" / "loose.safetensors"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(tui_world.files["split_files/vae/ae.safetensors"])
    manager.scan()
    app = ModelMgrApp(manager, initial="library")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_library(pilot, app, 2)
        await pilot.press("down", "r", "y")
        await wait_for_modal(pilot, "removal")
        assert "deleted loras/loose.safetensors" in modal_text(app)
        await pilot.press("escape")
        await open_library(pilot, app, 0)
        assert not loose.exists()
        assert "nothing recorded" in details_text(app)
