"""The bottom line of every screen: its keys (clickable) and the command palette's.

Rendered once per screen from the screen's and the App's ``BINDINGS`` (those with ``show``).
Textual's ``Footer`` would do the same, but it rebuilds its key widgets on every screen switch
and focus change, in every screen; during a full-speed pull that work competes with the
download's thread for the interpreter, so this bar stays a single static line.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.content import Content
from textual.widgets import Static


class KeyBar(Static):
    """``p Pull  i Inspect … ? Help`` on the left, ``^p palette`` on the right."""

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__(id="keybar")
        self.bindings = [b for b in bindings if isinstance(b, Binding) and b.show]

    def on_mount(self) -> None:
        parts = []
        for binding in self.bindings:
            key = self.app.get_key_display(binding.with_key(binding.key.split(",")[0]))
            namespace = "app" if binding in self.app.BINDINGS else "screen"
            parts.append(Content.from_markup(
                f"[@click={namespace}.{binding.action}][b]$key[/b] $what[/]  ",
                key=key, what=binding.description))
        parts.append(Content.from_markup("[@click=app.command_palette][b]^p[/b] palette[/]"))
        self.update(Content("").join(parts))
