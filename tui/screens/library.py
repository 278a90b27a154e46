"""Library: the recorded assets grouped by ComfyUI folder, and a details pane with what the registry
knows of the highlighted file (header facts, hashes, last verification, smoke results).
Verify (quick or deep), inspect and remove from here."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import DataTable, Static

from modelmgr.cli.render import human_bytes
from modelmgr.registry.store import Asset

from .. import format as fmt
from ..widgets.details import DetailsPane
from .base import TableDetailsScreen

COLUMNS = (("name", "file"), ("size", "size"), ("precision", "precision"),
           ("family", "family"), ("bundles", "bundles"), ("check", "check"))
FOLDER_KEY = "folder:"


def split_folder(path: str) -> tuple[str, str]:
    """(ComfyUI folder, rest of the path); files right under the root are in ``.``."""
    folder, sep, rest = path.partition("/")
    return (folder, rest) if sep else (".", path)


Row = tuple[Asset, list[str]]
"""An asset and the installed bundles that use it, as ``ModelManager.assets`` gives them."""


def group_by_folder(rows: list[Row]) -> dict[str, list[Row]]:
    """Assets by their first path component (the ComfyUI folder), folders in name order."""
    groups: dict[str, list[Row]] = {}
    for asset, users in sorted(rows, key=lambda r: r[0].path):
        groups.setdefault(split_folder(asset.path)[0], []).append((asset, users))
    return groups


def folder_details(folder: str, members: list[Row]) -> Text:
    out = Text()
    out.append(f"{folder}/\n", fmt.HEADING)
    out.append(f"{len(members)} file(s), {human_bytes(sum(a.size for a, _ in members))}\n")
    precisions = Counter(a.precision or "?" for a, _ in members)
    out.append("precisions: " + ", ".join(f"{p} {n}" for p, n in precisions.most_common()) + "\n",
               fmt.MUTED)
    return out


class LibraryScreen(TableDetailsScreen):
    """The asset table grouped by folder, a summary line above, the details pane beside it."""

    MODE = "library"
    TABLE = "#assets"
    BINDINGS = [
        Binding("v", "verify(False)", "Verify",
                tooltip="Quick verify of every asset: size, mtime and header"),
        Binding("V", "verify(True)", "Deep verify", key_display="V",
                tooltip="Deep verify of every asset: re-hash and compare with the recorded hash"),
        Binding("i", "inspect", "Inspect", tooltip="Read the highlighted file's header again"),
        Binding("r", "remove", "Remove",
                tooltip="Delete the highlighted file (refused while a bundle needs it)"),
        Binding("enter", "details", "Details", show=False,
                tooltip="Show the details pane full screen (Escape restores)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[str, list[Row]] = {}
        self.by_path: dict[str, Row] = {}

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="library-summary")
        with Container(id="body"):
            yield DataTable(id="assets", cursor_type="row")
            yield DetailsPane("asset-details", "no file selected")

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.table.add_column(label, key=key)
        self.table.focus()
        super().on_mount()

    def reload(self) -> None:
        self.call_service("assets", self.app.manager.assets, self._fill, group="library")

    def _fill(self, rows: list[Row]) -> None:
        self.groups = group_by_folder(rows)
        self.by_path = {a.path: (a, users) for a, users in rows}
        total = sum(a.size for a, _ in rows)
        self.query_one("#library-summary", Static).update(Text(
            f"{self.app.manager.root}: {len(rows)} file(s), {human_bytes(total)}"))
        table, keep = self.table, self.selected
        table.clear()
        for folder, members in self.groups.items():
            table.add_row(Text(f"{folder}/ ({len(members)})", fmt.HEADING),
                          human_bytes(sum(a.size for a, _ in members)), "", "", "", "",
                          key=FOLDER_KEY + folder)
            for asset, users in members:
                good = asset.verify_status in (None, "ok")
                table.add_row(f"  {split_folder(asset.path)[1]}", human_bytes(asset.size),
                              asset.precision or "?", asset.family or "", ",".join(users),
                              Text(asset.verify_status or "", "" if good else fmt.BAD),
                              key=asset.path)
        self.restore_cursor(keep)
        if not rows:
            self.query_one(DetailsPane).show(Text(
                "nothing recorded under this root yet: pull a bundle from the Catalogue (1)",
                fmt.MUTED))

    def select(self, key: str) -> None:
        super().select(key)
        pane = self.query_one(DetailsPane)
        if key.startswith(FOLDER_KEY):
            folder = key[len(FOLDER_KEY):]
            pane.show(folder_details(folder, self.groups.get(folder, [])))
        elif key in self.by_path:
            pane.show(fmt.asset_details(*self.by_path[key]))

    # -- actions -----------------------------------------------------------------------------
    def _selected_file(self) -> str | None:
        if self.selected is None or self.selected not in self.by_path:
            self.app.notify("highlight a file first", severity="warning")
            return None
        return self.selected

    def action_verify(self, deep: bool) -> None:
        self.app.verify(deep)

    def action_inspect(self) -> None:
        if path := self._selected_file():
            self.app.inspect(path)

    def action_remove(self) -> None:
        if path := self._selected_file():
            self.app.remove(path)
