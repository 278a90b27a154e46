"""Transfers: every pull of this session and each of its files, running, queued, paused or
finished, with bytes, speed, ETA, connections and retries; cancel and resume from here.

The table is refreshed from :meth:`Pulls.sample` on a 10 Hz timer while the screen is shown,
so a 16-connection pull at full speed costs at most ten updates per second per file however many
chunks arrive; cells are only touched when their text changed.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from modelmgr.cli.render import SAMPLE_HZ, human_bytes
from modelmgr.library.layout import MODEL_SUFFIXES

from .. import format as fmt
from ..pulls import TransferRow
from .base import ModeScreen

COLUMNS = (("name", "file", 0), ("state", "state", 11), ("progress", "progress", 14),
           ("speed", "speed", 11), ("eta", "ETA", 5), ("conns", "conn", 4), ("retries", "retry", 5))
"""(key, label, width): fixed widths, so that values growing during a pull never get cut; the
file name gets what is left (14 columns in an 80-column terminal, the full path is below)."""
FIXED_WIDTH = sum(width + 2 for _, _, width in COLUMNS[1:]) + 2 + 2
"""The other columns with their cell padding, the file column's padding and the scrollbar."""
NAME_MAX = 60
"""Wide terminals: keep the numbers near the names."""
STATE_STYLE = {"verified": fmt.GOOD, "done": fmt.GOOD, "failed": fmt.BAD, "paused": fmt.WARN,
               "stopped": fmt.WARN}


def short(relpath: str, width: int) -> str:
    """The file's name without its model-file suffix, cut in the middle to ``width``: both ends
    say something (``flux1-dev`` … ``fp8-scaled``); the details line shows the whole path."""
    name = relpath.rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    if dot and "." + suffix.lower() in MODEL_SUFFIXES:
        name = stem
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def progress(row: TransferRow) -> str:
    if row.total is None:
        return human_bytes(row.done)
    pct = 100 * row.done / row.total if row.total else 100.0
    return f"{pct:3.0f}% {human_bytes(row.total)}"


class TransfersScreen(ModeScreen):
    """The transfers table and a details line for the highlighted row."""

    MODE = "transfers"
    BINDINGS = [
        Binding("c", "cancel", "Cancel",
                tooltip="Cancel the highlighted pull; its partial files and resume state are kept"),
        Binding("u", "resume", "Resume",
                tooltip="Resume a paused or failed pull (pulls the bundle again)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[TransferRow] = []
        self.samples = 0
        """Timer ticks that read the hub (the coalescing test counts them)."""

    def compose_body(self) -> ComposeResult:
        yield DataTable(id="transfers", cursor_type="row")
        yield Static(id="transfer-note")

    @property
    def table(self) -> DataTable:
        return self.query_one("#transfers", DataTable)

    def on_mount(self) -> None:
        self.set_interval(1 / SAMPLE_HZ, self.sample)
        super().on_mount()
        self.table.focus()

    def on_screen_resume(self) -> None:
        self.sample()  # show fresh numbers at once; from then on the timer alone samples

    def on_resize(self) -> None:
        self.rows = []  # new width: rebuild with the file column sized to fit

    def sample(self) -> None:
        """Read the hub once and bring the table up to date (only while shown)."""
        if not self.is_current:
            return
        self.samples += 1
        rows = self.app.pulls.sample()
        if [r.key for r in rows] != [r.key for r in self.rows] or not self.table.columns:
            self._rebuild(rows)
        else:
            for new, old in zip(rows, self.rows):
                if new != old:
                    before = self._cells(old)
                    for key, value in self._cells(new).items():
                        if value != before[key]:
                            self.table.update_cell(new.key, key, value)
        self.rows = rows
        self._show_note()

    def _cells(self, row: TransferRow) -> dict[str, str | Text]:
        job_row = row.relpath is None
        name = row.bundle if job_row else " " + short(row.relpath, self._name_width() - 1)
        return {"name": Text(name, fmt.HEADING) if job_row else name,
                "state": Text(row.state, STATE_STYLE.get(row.state, "")),
                "progress": progress(row), "speed": fmt.speed(row.speed), "eta": fmt.eta(row.eta),
                "conns": str(row.connections), "retries": str(row.retries)}

    def _name_width(self) -> int:
        return min(NAME_MAX, max(12, self.size.width - FIXED_WIDTH))

    def _rebuild(self, rows: list[TransferRow]) -> None:
        table = self.table
        keep = self._highlighted()
        table.clear(columns=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width or self._name_width())
        for row in rows:
            table.add_row(*self._cells(row).values(), key=row.key)
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep), animate=False)

    def _highlighted(self) -> str | None:
        table = self.table
        if not table.row_count or not table.columns:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _selected_row(self) -> TransferRow | None:
        key = self._highlighted()
        return next((r for r in self.rows if r.key == key), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_note()

    def _show_note(self) -> None:
        note = self.query_one("#transfer-note", Static)
        row = self._selected_row()
        if row is None:
            note.update(Text("no pulls yet: highlight a bundle in the Catalogue (1) and press p",
                             fmt.MUTED))
            return
        text = Text()
        text.append(row.relpath or row.bundle, fmt.HEADING)
        text.append(f"  {human_bytes(row.done)} of {human_bytes(row.total)}\n", fmt.MUTED)
        text.append(row.note, STATE_STYLE.get(row.state, ""))
        note.update(text)

    # -- actions -----------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if row := self._selected_row():
            self.app.cancel_pull(row.bundle)
        else:
            self.app.notify("no pull selected", severity="warning")

    def action_resume(self) -> None:
        if row := self._selected_row():
            self.app.resume_pull(row.bundle)
        else:
            self.app.notify("no pull selected", severity="warning")
