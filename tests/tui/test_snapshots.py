"""Snapshots of the main screens at 80x24 (SSH) and 160x48, from a temp root with known content.

Deterministic by construction: the catalogue is the three test bundles, the root is the relative
path ``models`` (the test runs in its temp folder), the one bundle is installed from the loopback
Hub with fixed bytes, every last verification is set to one fixed time in UTC, and the Transfers
snapshot is taken after its pull finished (no speeds, no ETAs). Update with
``pytest tests/tui --snapshot-update`` and look at the SVGs before committing them.
"""

from __future__ import annotations

import time

import pytest

from modelmgr_tui.app import ModelMgrApp

from .conftest import details_text, freeze_verification, install, wait_for

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


@pytest.fixture
def known_root(tui_world, managers, monkeypatch, tmp_path):
    """A manager on ``models`` (relative) with bf16-tiny installed and frozen verification."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    manager = managers(tui_world, root="models")
    install(manager, "bf16-tiny")
    freeze_verification(manager)
    yield manager
    monkeypatch.undo()
    time.tzset()


async def settle(pilot) -> None:
    """No toasts, nothing pending."""
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


@SIZES
def test_catalogue(snap_compare, known_root, size):
    app = ModelMgrApp(known_root)

    async def ready(pilot):
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        await wait_for(pilot, lambda: "still to fetch" in details_text(app), what="details")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@SIZES
def test_library(snap_compare, known_root, size):
    app = ModelMgrApp(known_root, initial="library")

    async def ready(pilot):
        await wait_for(pilot, lambda: app.screen.query_one("#assets").row_count == 6,
                       what="the library")
        await pilot.press("down")  # the diffusion model's details
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@SIZES
def test_transfers_after_a_pull(snap_compare, known_root, size):
    app = ModelMgrApp(known_root)

    async def ready(pilot):
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        app.pull("fp8-tiny")  # shares its text encoder and VAE: one file to fetch
        await wait_for(pilot, lambda: not app.pulls.active, what="the pull")
        assert app.pulls.jobs["fp8-tiny"].state == "done"
        await pilot.press("3")
        await pilot.pause(0.2)
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@SIZES
def test_help(snap_compare, known_root, size):
    app = ModelMgrApp(known_root, initial="help")

    async def ready(pilot):
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)
