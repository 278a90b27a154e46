"""Showing a pull while it runs: Rich bars on a TTY, periodic plain lines otherwise, nothing with
``--json``. All three sample the ``ProgressHub`` on their own clock; the engine never waits on them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Awaitable, TypeVar

from rich.console import Console
from rich.text import Text
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

from ..download.engine import FileResult
from ..download.progress import ProgressHub

T = TypeVar("T")
SAMPLE_HZ = 10
PLAIN_INTERVAL = 5.0


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


async def run_with_progress(hub: ProgressHub, work: Awaitable[T], mode: str,
                            console: Console) -> T:
    """Await ``work`` while rendering ``hub`` in ``mode`` (rich | plain | quiet)."""
    task = asyncio.ensure_future(work)
    if mode == "quiet":
        return await task
    if mode == "plain":
        return await _plain(hub, task)
    return await _rich(hub, task, console)


async def _rich(hub: ProgressHub, task: asyncio.Future, console: Console):
    columns = (TextColumn("[bold]{task.description}", justify="left"), BarColumn(),
               DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[extra]}"))
    with Progress(*columns, console=console, transient=False, refresh_per_second=SAMPLE_HZ) as bars:
        ids: dict[str, TaskID] = {}
        total_id = bars.add_task("total", total=None, extra="")
        shown_events = 0
        while not task.done():
            for name, fp in list(hub.files.items()):
                if name not in ids:
                    ids[name] = bars.add_task(_short(name), total=fp.total, extra="")
                extra = f"{fp.status} c={fp.connections} r={fp.retries}"
                bars.update(ids[name], completed=fp.done, total=fp.total, extra=extra)
            bars.update(total_id, completed=hub.done, total=hub.total or None,
                        extra=f"{len(hub.files)} files")
            events = list(hub.events)
            for text in events[shown_events:]:
                bars.console.print(Text(text, style="dim"))
            shown_events = len(events)
            await asyncio.wait([task], timeout=1 / SAMPLE_HZ)
        for name, fp in hub.files.items():
            if name in ids:
                bars.update(ids[name], completed=fp.done, total=fp.total,
                            extra=f"{fp.status} r={fp.retries}")
        bars.update(total_id, completed=hub.done, total=hub.total or None)
    return task.result()


async def _plain(hub: ProgressHub, task: asyncio.Future):
    last = time.monotonic()  # first line after one interval, when there is a speed to show
    shown_events = 0
    while not task.done():
        await asyncio.wait([task], timeout=1 / SAMPLE_HZ)
        now = time.monotonic()
        speeds = {name: fp.speed(now) for name, fp in hub.files.items()}
        events = list(hub.events)
        for text in events[shown_events:]:
            print(text, file=sys.stderr, flush=True)
        shown_events = len(events)
        if now - last < PLAIN_INTERVAL or task.done():
            continue
        last = now
        for name, fp in hub.files.items():
            if fp.status != "downloading":
                continue
            pct = f"{100 * fp.done / fp.total:5.1f}%" if fp.total else "  ?  "
            print(f"{name}: {pct} {human_bytes(fp.done)}/{human_bytes(fp.total)} "
                  f"{human_bytes(speeds[name])}/s conns={fp.connections} retries={fp.retries}",
                  file=sys.stderr, flush=True)
    return task.result()


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def print_results(results: list[FileResult], as_json: bool, console: Console) -> None:
    """The final report: one line per file, or one JSON document."""
    if as_json:
        doc = {"ok": all(r.error is None for r in results),
               "files": [r.to_dict() for r in results]}
        print(json.dumps(doc, indent=2))
        return
    for r in results:
        if r.error is not None:
            console.print(f"[red]✗[/red] {r.name}: {r.error}", markup=False, highlight=False)
            continue
        digest = next(iter(r.hashes.items()), None)
        rate = f", {human_bytes(r.fetched / r.seconds)}/s" if r.fetched and r.seconds else ""
        what = "already present" if r.status == "present" else f"downloaded in {r.seconds:.1f}s{rate}"
        resumed = f", resumed at {human_bytes(r.resumed_from)}" if r.resumed_from else ""
        console.print(f"✓ {r.path}  {human_bytes(r.size)}  {what}{resumed}"
                      + (f"\n  {digest[0]} {digest[1]}" if digest else ""),
                      markup=False, highlight=False)
