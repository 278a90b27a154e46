"""Catalogue screen: the table, type-to-filter, the details pane, and the actions started from it
(inspect, remove with confirmation, smoke, errors in a modal with the CLI's text)."""

from __future__ import annotations

import textwrap

import pytest
from textual import events

from modelmgr.errors import NotFoundError
from modelmgr.service import ModelManager
from modelmgr_tui.app import SMOKE_MISSING, ModelMgrApp
from modelmgr_tui.screens.catalogue import CatalogueScreen
from modelmgr_tui.screens.modals import ConfirmScreen
from tests.procs import cli_env, run_cli

from .conftest import (TinyManager, ainstall, details_text, modal_text, wait_for,
                       wait_for_modal)

DM = "diffusion_models/tiny_bf16.safetensors"
VAE = "vae/ae.safetensors"


def rows(app: ModelMgrApp) -> list[str]:
    table = app.screen.query_one("#bundles")
    return [key.value for key in table.rows]


async def test_table_filter_and_details(tui_world, managers):
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        assert rows(app) == ["bf16-tiny", "fp8-tiny", "nvfp4-liar"]
        await wait_for(pilot, lambda: "Tiny bf16-tiny" in details_text(app), what="details")
        assert "·" in details_text(app) and "missing" in details_text(app)

        await pilot.press("f", "p", "8")  # typing on the table starts the filter
        assert app.screen.query_one("#filter").value == "fp8"
        assert rows(app) == ["fp8-tiny"]
        await wait_for(pilot, lambda: "Tiny fp8-tiny" in details_text(app), what="details")
        await pilot.press("down")  # back to the table: keys are actions again
        assert app.focused is app.screen.query_one("#bundles")

        await pilot.press("slash", "ctrl+a", "backspace", "z", "z", "z")
        assert rows(app) == []
        assert "no bundle matches" in details_text(app)
        await pilot.press("escape")  # clears the filter and returns to the table
        assert len(rows(app)) == 3 and app.focused is app.screen.query_one("#bundles")

        await pilot.press("enter")  # details full screen, Escape restores
        assert app.screen.maximized is app.screen.query_one("#bundle-details")
        await pilot.press("escape")
        assert app.screen.maximized is None


async def test_a_burst_of_keys_all_lands_in_the_filter(tui_world, managers):
    """Fast typing (or a paste over SSH) queues keys for the table before the focus moves."""
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        for key in ("f", "p", "8", "-", "t", "i"):  # p is bound (pull) but part of the word
            app.post_message(events.Key(key, key))
        await pilot.pause()
        assert app.screen.query_one("#filter").value == "fp8-ti"
        assert rows(app) == ["fp8-tiny"] and not app.pulls.jobs
        for key in ("down", "p"):  # and back: p is an action again, even in a burst
            app.post_message(events.Key(key, None if key == "down" else key))
        await wait_for(pilot, lambda: "fp8-tiny" in app.pulls.jobs, what="the pull")
        assert app.screen.query_one("#filter").value == "fp8-ti"


async def test_installed_state_and_present_files(tui_world, managers):
    manager = managers(tui_world)
    await ainstall(manager, "bf16-tiny")
    app = ModelMgrApp(manager)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#bundles")
        await wait_for(pilot, lambda: table.row_count == 3, what="the bundles")
        assert table.get_cell("bf16-tiny", "state") == "installed"
        assert table.get_cell("fp8-tiny", "state") == ""
        await pilot.press("down")  # fp8-tiny: shares the text encoder and VAE
        await wait_for(pilot, lambda: "Tiny fp8-tiny" in details_text(app), what="details")
        text = details_text(app)
        assert "text_encoders/clip_l.safetensors" in text and "present" in text
        assert "missing" in text  # its own diffusion model


async def test_inspect_then_remove_keeps_shared_files(tui_world, managers):
    manager = managers(tui_world)
    await ainstall(manager, "bf16-tiny", "fp8-tiny")
    app = ModelMgrApp(manager)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        await pilot.press("i")
        await wait_for_modal(pilot, "inspect")
        text = modal_text(app)
        assert DM in text and "bf16" in text and "flux1:dev" in text and "parameters" in text
        await pilot.press("escape")

        await pilot.press("r")
        assert "Remove bf16-tiny?" in await wait_for_modal(pilot, "the question", ConfirmScreen)
        await pilot.press("n")  # nothing happens
        assert (tui_world.root / DM).exists()
        await pilot.press("r", "y")
        await wait_for_modal(pilot, "removal")
        text = modal_text(app)
        assert f"deleted {DM}" in text and "kept vae/ae.safetensors (used by fp8-tiny)" in text
        assert not (tui_world.root / DM).exists() and (tui_world.root / VAE).exists()
        await pilot.press("escape")
        table = app.screen.query_one("#bundles")
        await wait_for(pilot, lambda: table.get_cell("bf16-tiny", "state") == "",
                       what="the catalogue to follow the removal")


async def test_smoke_not_in_this_build(tui_world, managers, monkeypatch):
    monkeypatch.delattr(ModelManager, "smoke", raising=False)
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        await pilot.press("s")
        assert [n.message for n in app._notifications] == [SMOKE_MISSING]


class SmokingManager(TinyManager):
    """A build where the service has a smoke test (the TUI must not care how it works)."""

    async def smoke(self, name: str) -> dict:
        return {"bundle": name, "verdict": "PASS", "it_s": 10.5}


async def test_smoke_result_when_the_service_has_one(tui_world, managers):
    app = ModelMgrApp(managers(tui_world, cls=SmokingManager))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        await pilot.press("s")
        await wait_for_modal(pilot, "smoke")
        assert "verdict" in modal_text(app) and "PASS" in modal_text(app)


GHOST = textwrap.dedent("""\
    name: ghost-tiny
    title: A bundle whose repo is gone
    family: flux1
    precision: bf16
    licence: apache-2.0
    gated: false
    files:
      - role: diffusion_model
        source: "hf:org/gone@{commit}/model.safetensors"
        folder: diffusion_models
        format: bf16
    """)


async def test_errors_show_the_cli_text(tui_world, managers):
    (tui_world.bundles_dir / "ghost-tiny.yaml").write_text(GHOST.format(commit="a" * 40))
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 4, what="the bundles")
        await pilot.press("g", "h", "o", "down", "p")
        await wait_for_modal(pilot, "the error")
        shown = modal_text(app)
        assert app.pulls.jobs["ghost-tiny"].state == "failed"
        assert isinstance(app.pulls.jobs["ghost-tiny"].error, NotFoundError)
    env = cli_env(HF_ENDPOINT=tui_world.hub.endpoint, MODELMGR_ROOT=str(tui_world.root),
                  MODELMGR_BUNDLES=str(tui_world.bundles_dir), COLUMNS="400")
    code, _, err = await run_cli("pull", "bundle", "ghost-tiny", env=env)
    assert code == NotFoundError.exit_code
    assert shown.strip() == err.strip()


async def test_a_file_that_is_not_what_it_claims_fails_in_a_modal(tui_world, managers):
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(rows(app)) == 3, what="the bundles")
        await pilot.press("n", "v", "down", "p")
        await wait_for_modal(pilot, "the error")
        text = modal_text(app)
        assert "tiny_liar.safetensors" in text and "nvfp4" in text and "error: " in text
        assert isinstance(app.screen_stack[0], CatalogueScreen)


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {}])
def test_no_color_is_honoured(tui_world, managers, monkeypatch, env):
    monkeypatch.delenv("NO_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ModelMgrApp(managers(tui_world)).no_color is bool(env)
