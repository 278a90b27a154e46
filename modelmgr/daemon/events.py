"""Structured log lines for the daemon: one ``key=value`` line per event on stdout.

journald (and any log shipper) reads one line per event; logfmt keeps lines greppable by humans
(``journalctl -u modelmgr | grep event=cycle.done``) and parseable by machines. No colours, no
progress bars: download progress is sampled into a line every few seconds
(:func:`progress_reporter`). When the stream is the journal (``JOURNAL_STREAM`` names it), each
line starts with a ``<N>`` syslog priority that journald turns into the entry's priority
(``journalctl -p warning`` works) and timestamps are left to the journal; elsewhere each line
starts with ``ts=``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from ..download.progress import ProgressHub

_BARE = re.compile(r"^[A-Za-z0-9_./:@%+,-]+$")
_ACTIVE = ("waiting", "probing", "downloading", "verifying")
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".")
    text = str(value)
    return text if _BARE.match(text) else json.dumps(text)


class EventLog:
    """Writes ``<N>level=... event=... key=value ...`` lines to the journal, or
    ``ts=... level=... event=...`` lines elsewhere, and flushes each one."""

    def __init__(self, stream: TextIO | None = None, *, journal: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.journal = _is_journal(self.stream) if journal is None else journal

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        if self.journal:
            parts = [f"<{_PRIORITY.get(level, 6)}>level={level}"]
        else:
            parts = ["ts=" + datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                     .replace("+00:00", "Z"), f"level={level}"]
        parts.append(f"event={event}")
        parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
        try:
            self.stream.write(" ".join(parts).replace("\n", " ") + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stdout gone (journald restarted): keep working
            pass


def _is_journal(stream: TextIO) -> bool:
    """Is ``stream`` systemd's journal? ``JOURNAL_STREAM`` names it as ``device:inode``."""
    want = os.environ.get("JOURNAL_STREAM")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def human_rate(rate: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if rate < 1024 or unit == "GiB":
            return f"{rate:.1f}{unit}/s"
        rate /= 1024
    return f"{rate:.1f}GiB/s"


async def progress_reporter(hub: ProgressHub, log: EventLog, every: float,
                            status: Callable[[str], None] | None = None) -> None:
    """Every ``every`` seconds: a line per active file, the engine's notes (retries, waits),
    and a one-line summary for systemd's STATUS=. Runs until cancelled."""
    while True:
        await asyncio.sleep(every)
        while hub.events:
            log("download.note", message=hub.events.popleft())
        now = time.monotonic()
        active = [f for f in hub.files.values() if f.status in _ACTIVE]
        rate = 0.0
        for f in active:
            speed = f.speed(now)
            rate += speed
            percent = round(100 * f.done / f.total, 1) if f.total else None
            log("download.progress", file=f.name, status=f.status, done=f.done, total=f.total,
                percent=percent, rate=human_rate(speed), connections=f.connections,
                retries=f.retries or None)
        if active and status is not None:
            done = sum(f.done for f in active)
            total = sum(f.total or 0 for f in active)
            share = f", {100 * done / total:.0f}%" if total else ""
            status(f"downloading {len(active)} file(s){share} at {human_rate(rate)}")
