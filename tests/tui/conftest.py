"""The TUI against the tiny real catalogue of tests/library, served by a loopback Hub.

The Hub runs on a loop of its own in a thread (``run_in_thread``), so both the async pilot tests
and the sync snapshot tests (``snap_compare`` runs the app on a loop it makes itself) can pull
from it. The manager sees only the test bundles: the shipped catalogue changes over time and
would make the snapshots drift.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import Static

from modelmgr.catalogue.catalogue import Catalogue
from modelmgr.catalogue.loader import load_bundle
from modelmgr.service import ModelManager
from modelmgr.settings import Settings
from modelmgr_tui.app import ModelMgrApp
from modelmgr_tui.screens.modals import MessageScreen
from tests.download.helpers import fast_settings
from tests.library.conftest import World, make_world
from tests.servers import HubServer
from tests.servers.base import run_in_thread

FIXED_TIME = 1_700_000_000.0
"""What snapshot tests set as every asset's last verification (2023-11-14 22:13 UTC)."""


class TinyManager(ModelManager):
    """A manager whose catalogue holds only the bundle files of one folder."""

    def __init__(self, settings, folder: Path) -> None:
        super().__init__(settings)
        self._folder = folder

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self._catalogue = Catalogue(bundles={
                b.name: b for b in (load_bundle(p) for p in sorted(self._folder.glob("*.yaml")))})
        return self._catalogue


def tiny_settings(world: World, root: Path | str | None = None, **settings) -> Settings:
    """Fast engine settings pointed at the world's Hub, root and bundle folder."""
    return fast_settings(hf_endpoint=world.hub.endpoint, models_root=str(root or world.root),
                         bundles_dir=str(world.bundles_dir), **settings)


def tiny_manager(world: World, root: Path | str | None = None, *,
                 cls: type[TinyManager] = TinyManager, **settings) -> TinyManager:
    return cls(tiny_settings(world, root, **settings), world.bundles_dir)


@pytest.fixture
def tui_world(tmp_path):
    """The tiny world with its Hub on a background thread; stopped after the test."""
    with run_in_thread(HubServer()) as hub:
        yield make_world(hub, tmp_path)


@pytest.fixture
def managers():
    """Make managers (``tiny_manager``'s arguments) that are closed after the test."""
    made: list[ModelManager] = []

    def make(world: World, root: Path | str | None = None, **kw) -> TinyManager:
        made.append(tiny_manager(world, root, **kw))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def install(manager: ModelManager, *bundles: str) -> None:
    """Install bundles before the app starts, from a sync test or fixture."""
    asyncio.run(ainstall(manager, *bundles))


async def ainstall(manager: ModelManager, *bundles: str) -> None:
    """Install bundles before the app starts, from an async test."""
    for name in bundles:
        report = await manager.install_bundle(name)
        assert report.ok, [f.error for f in report.files]


def freeze_verification(manager: ModelManager) -> None:
    """Give every asset the same last-verification time, so snapshots hold no clock."""
    registry = manager.library.registry
    for path in list(registry.iter_paths()):
        registry.update(path, verified_at=FIXED_TIME)


async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def static_text(app: ModelMgrApp, selector: str) -> str:
    """The plain text a Static of the current screen shows."""
    content = app.screen.query_one(selector, Static).content
    return content.plain if hasattr(content, "plain") else str(content)


def modal_text(app: ModelMgrApp) -> str:
    """The text of the message or confirmation on top."""
    return static_text(app, "#message-text")


async def wait_for_modal(pilot, what: str, cls: type = MessageScreen) -> str:
    """Wait until a modal of ``cls`` is on top and composed; returns its text."""
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, cls) and app.screen.query("#message-text"),
                   what=what)
    return modal_text(app)


def details_text(app: ModelMgrApp) -> str:
    """The text of the current screen's details pane."""
    return static_text(app, ".details-text")
