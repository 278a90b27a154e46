"""What every mode's screen shares: the navigation bar on top, the key bar below, and the
App's change signals (library changed, pulls changed) wired to ``reload`` / ``pulls_changed``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable

from ..calls import ServiceCalls
from ..widgets.details import DetailsPane
from ..widgets.keybar import KeyBar
from ..widgets.navbar import NavBar

if TYPE_CHECKING:
    from ..app import ModelMgrApp


class ModeScreen(ServiceCalls, Screen):
    """Base class; subclasses set ``MODE`` and implement ``compose_body``."""

    MODE: ClassVar[str] = ""
    app: "ModelMgrApp"

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield KeyBar([*self.BINDINGS, *self.app.BINDINGS])

    def compose_body(self) -> ComposeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_mount(self) -> None:
        self.app.library_changed.subscribe(self, lambda _: self.reload())
        self.app.pulls_changed.subscribe(self, lambda _: self.pulls_changed())
        self.reload()

    def reload(self) -> None:
        """Fetch this screen's data again (with ``call_service``: the worker is the screen's)."""

    def pulls_changed(self) -> None:
        """A pull started, ended or changed state."""


class TableDetailsScreen(ModeScreen):
    """A mode whose table drives a :class:`DetailsPane`; Enter shows the pane full screen.

    ``selected`` is the key of the highlighted row. It is set from the cursor after every
    rebuild of the table as well: a rebuilt table whose cursor stays on the same index posts no
    ``RowHighlighted``, yet the row there (and so the details) may be another one.
    """

    TABLE: ClassVar[str] = ""
    """Selector of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None

    @property
    def table(self) -> DataTable:
        return self.query_one(self.TABLE, DataTable)

    def restore_cursor(self, key: str | None) -> None:
        """After a rebuild: back on ``key`` if it is still there, and show what is selected."""
        table = self.table
        if key is not None and key in table.rows:
            table.move_cursor(row=table.get_row_index(key), animate=False)
        self.selected = None
        if table.row_count:
            self.select(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.select(event.row_key.value)

    def select(self, key: str) -> None:
        """The row ``key`` is highlighted: remember it and show its details."""
        self.selected = key

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()

    def action_details(self) -> None:
        pane = self.query_one(DetailsPane)
        self.maximize(pane, container=False)
        pane.focus()
