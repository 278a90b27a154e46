"""Catalogue: every bundle in a table, type-to-filter, and a details pane with its files and what is
already present. Pull, inspect, remove and smoke-test from here."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import DataTable

from modelmgr.catalogue.model import Bundle
from modelmgr.cli.render import human_bytes
from modelmgr.library.library import FileStatus

from .. import format as fmt
from ..widgets.details import DetailsPane
from ..widgets.filter import FilterLine
from .base import TableDetailsScreen

COLUMNS = (("name", "name"), ("family", "family"), ("precision", "precision"),
           ("size", "size"), ("state", "state"), ("expected", "expected"))


def matches(bundle: Bundle, words: list[str]) -> bool:
    """Every word of the filter appears in the name, title, family or precision."""
    haystack = " ".join((bundle.name, bundle.title, bundle.family, bundle.precision)).lower()
    return all(word in haystack for word in words)


class CatalogueScreen(TableDetailsScreen):
    """The bundle table (focused), the filter line above it, the details pane beside it."""

    MODE = "catalogue"
    BINDINGS = [
        Binding("p", "pull", "Pull", tooltip="Pull the highlighted bundle (a paused one resumes)"),
        Binding("i", "inspect", "Inspect",
                tooltip="Read the headers of the bundle's files that are present"),
        Binding("r", "remove", "Remove",
                tooltip="Remove the installed bundle (files other bundles need are kept)"),
        Binding("s", "smoke", "Smoke", tooltip="Run the GPU smoke test of the bundle"),
        Binding("slash", "focus_filter", "Filter", key_display="/",
                tooltip="Filter by name, family or precision (typing any letter starts it too)"),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="Clear the filter and show every bundle"),
        Binding("enter", "details", "Details", show=False,
                tooltip="Show the details pane full screen (Escape restores)"),
    ]

    TABLE = "#bundles"

    def __init__(self) -> None:
        super().__init__()
        self.bundles: list[tuple[Bundle, bool]] = []
        self._warned = False

    def compose_body(self) -> ComposeResult:
        yield FilterLine("type to filter by name, family, precision", id="filter")
        with Container(id="body"):
            yield DataTable(id="bundles", cursor_type="row")
            yield DetailsPane("bundle-details", "no bundle selected")

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.table.add_column(label, key=key)
        self.table.focus()
        self.watch(self.filter, "value", lambda _: self._show_rows(), init=False)
        super().on_mount()

    # -- data --------------------------------------------------------------------------------
    def reload(self) -> None:
        self.call_service("bundles", self.app.manager.bundles, self._fill, group="catalogue")

    def _fill(self, rows: list[tuple[Bundle, bool]]) -> None:
        self.bundles = rows
        self._show_rows()
        if not self._warned:
            self._warned = True
            for name, err in self.app.manager.catalogue.errors.items():
                self.app.notify(f"rejected bundle {name}: {err}", severity="warning", markup=False)

    def _state(self, bundle: Bundle, installed: bool) -> str:
        job = self.app.pulls.jobs.get(bundle.name)
        if job is not None and job.state != "done":
            return {"starting": "pulling", "running": "pulling"}.get(job.state, job.state)
        return "installed" if installed else ""

    def _show_rows(self) -> None:
        table = self.table
        words = self.filter.value.lower().split()
        keep = self.selected
        table.clear()
        for bundle, installed in self.bundles:
            if matches(bundle, words):
                table.add_row(bundle.name, bundle.family, bundle.precision,
                              human_bytes(bundle.total_size), self._state(bundle, installed),
                              fmt.expected_speed(bundle), key=bundle.name)
        self.restore_cursor(keep)
        if table.row_count == 0:
            self.query_one(DetailsPane).show(Text("no bundle matches the filter", "dim"))

    def pulls_changed(self) -> None:
        table = self.table
        for bundle, installed in self.bundles:
            if bundle.name in table.rows:
                table.update_cell(bundle.name, "state", self._state(bundle, installed))

    def select(self, name: str) -> None:
        super().select(name)
        self.call_service("bundle details", partial(self.app.manager.bundle_status, name),
                          self._show_details, group="bundle-details")

    def _show_details(self, found: tuple[Bundle, list[FileStatus], bool]) -> None:
        self.query_one(DetailsPane).show(fmt.bundle_details(*found))

    # -- filtering ---------------------------------------------------------------------------
    @property
    def filter(self) -> FilterLine:
        return self.query_one(FilterLine)

    def on_key(self, event: events.Key) -> None:
        """Type-to-filter: a printable key that no binding takes starts the filter; from then
        on every key is the filter's (bound letters too) until Enter, Down or Escape."""
        line = self.filter
        if not line.typing:
            if not (event.is_printable and event.character
                    and event.key not in self.active_bindings):
                return
            line.typing = True
        if line.key(event.key, event.character):
            event.stop()

    def action_focus_filter(self) -> None:
        self.filter.typing = True

    def action_clear_filter(self) -> None:
        self.filter.value = ""

    # -- actions -----------------------------------------------------------------------------
    def _selection(self) -> str | None:
        if self.selected is None:
            self.app.notify("no bundle selected", severity="warning")
        return self.selected

    def action_pull(self) -> None:
        if name := self._selection():
            self.app.pull(name)

    def action_inspect(self) -> None:
        if name := self._selection():
            self.app.inspect(name)

    def action_remove(self) -> None:
        if name := self._selection():
            self.app.remove(name)

    def action_smoke(self) -> None:
        if name := self._selection():
            self.app.smoke(name)
