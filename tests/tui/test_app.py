"""The App as a whole: help lists every binding, the command palette offers every action, and
``modelmgr tui`` without Textual says which extra to install."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console
from textual.binding import Binding
from textual.widgets import Static

from modelmgr.errors import ExitCode
from modelmgr_tui.app import ModelMgrApp
from modelmgr_tui.screens.catalogue import CatalogueScreen
from modelmgr_tui.screens.library import LibraryScreen
from modelmgr_tui.screens.transfers import TransfersScreen

from .conftest import static_text, wait_for, wait_for_modal

WITHOUT_TEXTUAL = """
import sys
sys.modules["textual"] = None  # importing textual (or anything under it) now fails
from modelmgr.cli.app import main
main(["tui", "--root", sys.argv[1]])
"""


def test_tui_without_textual_names_the_extra(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TEXTUAL, str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"})
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "pip install 'modelmgr[tui]'" in proc.stderr
    assert "Textual" in proc.stderr and "Traceback" not in proc.stderr


async def test_help_lists_every_binding(tui_world, managers):
    app = ModelMgrApp(managers(tui_world), initial="help")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        console = Console(width=200, file=io.StringIO())
        with console.capture() as captured:
            console.print(app.screen.query_one("#help-text", Static).content)
        text = captured.get()
    for screen in (CatalogueScreen, LibraryScreen, TransfersScreen):
        for binding in screen.BINDINGS:
            assert binding.tooltip in text, binding
    for binding in ModelMgrApp.BINDINGS:
        assert isinstance(binding, Binding) and binding.tooltip in text


async def test_palette_offers_every_action_of_the_screen(tui_world, managers):
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Pull", "Inspect", "Remove", "Smoke", "Filter", "Details", "Verify",
                "Deep verify", "Show Catalogue", "Show Library", "Show Transfers",
                "Show Help"} <= titles
        await pilot.press("3")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Cancel", "Resume", "Verify", "Deep verify"} <= titles

        await pilot.press("ctrl+p")
        await pilot.press(*"show library", "enter")
        await wait_for(pilot, lambda: app.current_mode == "library", what="the palette")
        assert "file(s)" in static_text(app, "#library-summary")


async def test_the_mouse_works_too(tui_world, managers):
    app = ModelMgrApp(managers(tui_world))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        await pilot.click("#navbar", offset=(26, 0))  # " 2 Library "
        assert app.current_mode == "library"
        await pilot.click("#keybar", offset=(2, 0))  # "v Verify"
        assert "files checked" in await wait_for_modal(pilot, "verify")
        await pilot.click("#close")
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0], what="the modal to close")
