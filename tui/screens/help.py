"""Help: every key binding, read from the screens' own ``BINDINGS`` so it cannot drift from them,
plus the keys Textual provides (command palette, focus, Escape)."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from .. import format as fmt
from .base import ModeScreen

EVERYWHERE = (("ctrl+p", "Command palette: every action by name"),
              ("tab / shift+tab", "Move the focus (the mouse works too)"),
              ("escape", "Close a dialog; restore a full-screen details pane"),
              ("ctrl+q", "Quit (running pulls are paused, to be resumed later)"))
EXTRA = {"catalogue": (("type a letter", "Start filtering; Down/Enter back to the list, "
                                         "Escape clears"),)}


class HelpScreen(ModeScreen):
    """A scrollable page of key bindings, grouped by screen."""

    MODE = "help"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(id="help-text")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#help-text", Static).update(self.help_text())
        self.query_one("#help").focus()

    def _keys(self, binding: Binding) -> str:
        return " / ".join(self.app.get_key_display(replace(binding, key=key.strip()))
                          for key in binding.key.split(","))

    def help_text(self) -> Group:
        sections = [("Everywhere", [(self._keys(b), b.tooltip or b.description)
                                    for b in self.app.BINDINGS if isinstance(b, Binding)]
                     + list(EVERYWHERE))]
        for mode, screen in self.app.MODES.items():
            if mode == self.MODE:
                continue
            rows = [(self._keys(b), b.tooltip or b.description) for b in screen.BINDINGS]
            sections.append((screen.__name__.removesuffix("Screen"),
                             rows + list(EXTRA.get(mode, ()))))
        parts: list = []
        for title, rows in sections:
            table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
            table.add_column(style="bold", width=16, no_wrap=True)
            table.add_column(ratio=1)
            for keys, what in rows:
                table.add_row(keys, what)
            parts += [Text(title, fmt.HEADING), table, Text("")]
        parts.append(Text("Progress is sampled ten times a second; leaving a screen never stops "
                          "a pull. NO_COLOR is honoured. Every action is also in the command "
                          "palette (ctrl+p).", fmt.MUTED))
        return Group(*parts)
