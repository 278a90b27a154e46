"""A scrollable details pane beside (wide terminals) or below (80 columns) a table."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


class DetailsPane(VerticalScroll):
    """Shows one Rich ``Text``; maximised with Enter on its table, restored with Escape."""

    ALLOW_MAXIMIZE = True  # containers refuse by default

    def __init__(self, id: str, placeholder: str = "") -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id, classes="details")
        self.placeholder = placeholder

    def compose(self):
        yield Static(Text(self.placeholder, "dim"), classes="details-text")

    def show(self, text: Text) -> None:
        self.query_one(".details-text", Static).update(text)
        self.scroll_home(animate=False)
