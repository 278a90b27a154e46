"""The filter line above the catalogue: what the user typed to narrow the table.

It is a display, not an input with the focus: the table keeps the focus and the screen feeds
this line the keys while the user is typing. Moving the focus to an ``Input`` and back loses or
misroutes keys when they arrive in a burst (fast typing, a paste over SSH): Textual queues each
key for the widget focused when the App dispatched it, and runs bindings only after a key has
bubbled up, so the keys right after a focus change land in the wrong place.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class FilterLine(Static):
    """``value`` is the filter; ``typing`` is on while keys go to it rather than to bindings."""

    value: reactive[str] = reactive("")
    typing: reactive[bool] = reactive(False)

    def __init__(self, placeholder: str, id: str) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.placeholder = placeholder

    def render(self) -> Text:
        if not self.value and not self.typing:
            return Text(self.placeholder, "dim")
        text = Text("filter: ", "dim")
        text.append(self.value, "bold")
        if self.typing:
            text.append(" ", "reverse")  # the cursor
            text.append("   Enter/Down: back to the list, Escape: clear", "dim")
        else:
            text.append("   /: edit, Escape: clear", "dim")
        return text

    def key(self, key: str, character: str | None) -> bool:
        """Feed one key while typing; False when the key is not the filter's."""
        if key in ("enter", "down"):
            self.typing = False
        elif key == "escape":
            self.value, self.typing = "", False
        elif key == "backspace":
            self.value = self.value[:-1]
        elif character and character.isprintable():
            self.value += character
        else:
            return False
        return True
