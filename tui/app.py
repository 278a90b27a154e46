"""The modelmgr TUI: four modes (Catalogue, Library, Transfers, Help), the global keys, and every
action (pull, cancel, resume, verify, inspect, remove, smoke) as an App method the screens and the
command palette call.

The App owns the state that must outlive a screen: the :class:`~.pulls.Pulls` of this session and
two signals (``library_changed``, ``pulls_changed``) the screens follow. Each mode keeps its
screen alive, so switching away and back loses neither a pull nor the cursor. Service calls run in
thread workers (:mod:`.calls`); errors are shown in a modal with the text the CLI prints.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from functools import partial
from typing import Any

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.signal import Signal

from modelmgr.errors import ModelMgrError
from modelmgr.service import ModelManager

from . import format as fmt
from .calls import ServiceCalls
from .pulls import PullJob, Pulls
from .screens.base import ModeScreen
from .screens.catalogue import CatalogueScreen
from .screens.help import HelpScreen
from .screens.library import LibraryScreen
from .screens.modals import ConfirmScreen, MessageScreen
from .screens.transfers import TransfersScreen

STOP_TIMEOUT = 10.0
"""Seconds to wait on quit for cancelled pulls to save their resume state."""
ACTIVITY_INTERVAL = 0.5
"""Seconds between updates of the navigation bar's pull summary."""
SMOKE_MISSING = "smoke test not available in this build"


class ModelMgrApp(ServiceCalls, App[None]):
    """The TUI over one :class:`ModelManager` (the caller owns and closes it)."""

    TITLE = "modelmgr"
    CSS_PATH = "app.tcss"
    MODES = {screen.MODE: screen
             for screen in (CatalogueScreen, LibraryScreen, TransfersScreen, HelpScreen)}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    NOTIFICATION_TIMEOUT = 3  # short: toasts cover the bottom right corner
    BINDINGS = [
        Binding("1", "switch_mode('catalogue')", "Catalogue", show=False,
                tooltip="Catalogue: the bundles; filter, pull, inspect, remove, smoke"),
        Binding("2", "switch_mode('library')", "Library", show=False,
                tooltip="Library: installed files by folder; verify, inspect, remove"),
        Binding("3", "switch_mode('transfers')", "Transfers", show=False,
                tooltip="Transfers: running and finished pulls; cancel, resume"),
        Binding("question_mark,f1", "switch_mode('help')", "Help", tooltip="This page"),
    ]

    activity: reactive[str] = reactive("")
    """What the pulls are doing, for the navigation bar ("" when nothing runs)."""

    def __init__(self, manager: ModelManager, *, initial: str = "catalogue") -> None:
        self.DEFAULT_MODE = initial  # read by App.__init__: start straight in that mode
        super().__init__()
        self.manager = manager
        self.pulls = Pulls(manager)
        self.library_changed: Signal[None] = Signal(self, "library-changed")
        self.pulls_changed: Signal[None] = Signal(self, "pulls-changed")

    def on_mount(self) -> None:
        self.set_interval(ACTIVITY_INTERVAL, self._update_activity)

    def on_unmount(self) -> None:
        self.pulls.stop_all(STOP_TIMEOUT)

    async def action_quit(self) -> None:
        """Pause running pulls (they keep their partial files) before leaving."""
        if self.pulls.active:
            self.notify("pausing the running pulls…")
            await asyncio.to_thread(self.pulls.stop_all, STOP_TIMEOUT)
        self.exit()

    # -- pulls -------------------------------------------------------------------------------
    def pull(self, bundle: str) -> PullJob | None:
        """Start pulling ``bundle`` (resuming whatever partial files it left)."""
        try:
            job = self.pulls.new_job(bundle)
        except ModelMgrError as err:
            self.show_error(err)
            return None
        self.call_service(f"pull {bundle}", partial(self.pulls.run, job), self._pull_finished)
        if self.current_mode != "transfers":
            self.notify(f"pulling {bundle}: see Transfers (3)", markup=False)
        self._pulls_changed()
        return job

    def cancel_pull(self, bundle: str) -> None:
        if self.pulls.cancel(bundle):
            self._pulls_changed()
        else:
            self.notify(f"{bundle} is not running", severity="warning", markup=False)

    def resume_pull(self, bundle: str) -> None:
        job = self.pulls.jobs.get(bundle)
        if job is not None and job.active:
            self.notify(f"{bundle} is already running", severity="warning", markup=False)
        elif job is not None and job.state == "done":
            self.notify(f"{bundle} is installed; nothing to resume", markup=False)
        else:
            self.pull(bundle)

    def _pull_finished(self, job: PullJob) -> None:
        self._pulls_changed()
        self.library_changed.publish(None)
        if job.state in ("done", "paused"):
            severity = "information" if job.state == "done" else "warning"
            self.notify(f"{job.bundle}: {job.summary}", markup=False, severity=severity)
        elif job.error is not None:
            self.show_error(job.error)
        else:
            failed = [f for f in job.report.files if f.error is not None] if job.report else []
            body = Text()
            for outcome in failed:
                body.append(f"✗ {outcome.relpath}\n", fmt.BAD)
                body.append(f"error: {outcome.error}\n\n")
            self.push_screen(MessageScreen(f"{job.bundle}: pull failed", body, error=True))

    def _pulls_changed(self) -> None:
        self.pulls_changed.publish(None)
        self._update_activity()

    def _update_activity(self) -> None:
        self.activity = self.pulls.activity()

    # -- library actions ---------------------------------------------------------------------
    def verify(self, deep: bool) -> None:
        self.notify("deep verify: re-hashing every file…" if deep else "verifying…")

        def done(report) -> None:
            self.library_changed.publish(None)
            self.push_screen(MessageScreen("verify" + (" --deep" if deep else ""),
                                           fmt.verify_report(report, deep)))

        self.call_service("verify", lambda: self.manager.verify(deep), done, group="verify")

    def inspect(self, target: str) -> None:
        def work() -> list[tuple[str, dict]]:
            return [(name, ins.to_dict()) for name, ins in self.manager.inspect(target)]

        self.call_service("inspect", work, lambda found: self.push_screen(
            MessageScreen(f"inspect {target}", fmt.inspections(found))), group="inspect")

    def remove(self, name: str) -> None:
        """Ask, then remove a bundle or one file; the service refuses files a bundle needs."""
        question = Text()
        question.append(f"Remove {name}?\n\n", fmt.HEADING)
        question.append("Files another installed bundle needs are kept (removing such a file "
                        "on its own is refused), and files modelmgr did not install are never "
                        "deleted with a bundle.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_service("remove", lambda: self.manager.remove(name), removed)

        def removed(result: tuple[list[str], list[str]]) -> None:
            self.library_changed.publish(None)
            self.push_screen(MessageScreen(f"removed {name}", fmt.removal(*result)))

        self.push_screen(ConfirmScreen("remove", question, yes="Remove"), answered)

    def smoke(self, bundle: str) -> None:
        """The GPU smoke test, where this build has one (the service imports torch, never us)."""
        run = getattr(self.manager, "smoke", None)
        if run is None:
            self.notify(SMOKE_MISSING, severity="warning")
            return

        def work() -> Any:
            result = run(bundle)
            if inspect.isawaitable(result):
                async def wait() -> Any:
                    return await result
                result = asyncio.run(wait())
            return result

        def done(result: Any) -> None:
            self.library_changed.publish(None)
            self.push_screen(MessageScreen(f"smoke {bundle}", fmt.smoke_result(result)))

        self.notify(f"smoke test of {bundle} running…", markup=False)
        self.call_service("smoke", work, done, group="smoke")

    # -- errors and the command palette ------------------------------------------------------
    def show_error(self, err: ModelMgrError) -> None:
        """The modal every failure ends in: the same text the CLI prints."""
        body = Text()
        body.append("error: ", fmt.BAD)
        body.append(str(err))
        self.push_screen(MessageScreen("error", body, error=True))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every screen switch, and every action of the current screen, by name."""
        base = screen if isinstance(screen, ModeScreen) else self.screen_stack[0]
        for binding in self.BINDINGS:
            if isinstance(binding, Binding):
                yield SystemCommand(f"Show {binding.description}", binding.tooltip,
                                    partial(self.run_action, binding.action))
        yield SystemCommand("Verify", "Quick verify of every asset: size, mtime and header",
                            partial(self.verify, False))
        yield SystemCommand("Deep verify", "Deep verify of every asset: re-hash and compare",
                            partial(self.verify, True))
        if isinstance(base, ModeScreen):
            for binding in base.BINDINGS:
                if not binding.action.startswith("verify"):  # offered above, on every screen
                    yield SystemCommand(binding.description, binding.tooltip,
                                        partial(self.run_action, binding.action, base))
        yield from super().get_system_commands(screen)
