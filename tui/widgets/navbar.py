"""The top line of every screen: the screens (the current one highlighted, clickable) and what
the pulls are doing, so a running pull stays visible wherever the user is."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

TABS = (("catalogue", "1", "Catalogue"), ("library", "2", "Library"),
        ("transfers", "3", "Transfers"), ("help", "?", "Help"))


class NavBar(Static):
    """One line; follows the App's ``activity`` reactive."""

    def __init__(self, current: str) -> None:
        super().__init__(id="navbar")
        self.current = current

    def on_mount(self) -> None:
        self.watch(self.app, "activity", self._show, init=True)

    def _show(self, activity: str) -> None:
        parts = [Content.from_markup("[b]modelmgr[/b] ")]
        for mode, key, label in TABS:
            style = "reverse" if mode == self.current else ""
            parts.append(Content.from_markup(
                f"[{style} @click=app.switch_mode('{mode}')] {key} {label} [/]"))
        if activity:
            parts.append(Content("  ") + Content.styled(activity, "bold"))
        self.update(Content("").join(parts))
