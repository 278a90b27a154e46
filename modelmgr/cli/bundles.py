"""``modelmgr bundles list|show`` and ``modelmgr pull bundle``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..library.install import InstallReport
from .common import (STATE, manager_for, print_json, progress_mode, run, stderr_console,
                     stdout_console)
from .options import JSON, ROOT
from .render import human_bytes, run_with_progress

app = typer.Typer(no_args_is_help=True, help="Browse the bundle catalogue.")


def _expected(bundle) -> str:
    """The first reference, short enough for an 80-column table."""
    return ", ".join(f"{e.it_s:g} it/s @{e.width}²" if e.width == e.height else
                     f"{e.it_s:g} it/s @{e.width}x{e.height}" for e in bundle.expected[:1]) or "-"


@app.command("list")
def list_bundles(installed: bool = typer.Option(False, "--installed", help="Only installed ones."),
                 root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """List the bundles: name, family, precision, total size, installed, expected speed."""
    STATE.json = as_json
    manager = manager_for(root)
    rows = manager.bundles(installed)
    if as_json:
        print_json({"bundles": [{"name": b.name, "title": b.title, "family": b.family,
                                 "precision": b.precision, "size": b.total_size,
                                 "gated": b.gated, "installed": inst,
                                 "expected": [e.__dict__ for e in b.expected]}
                                for b, inst in rows],
                    "rejected": {n: str(e) for n, e in manager.catalogue.errors.items()}})
        return
    table = Table("name", "family", "precision", "size", "inst", "expected", box=None)
    for column in table.columns:
        column.no_wrap = True
    for b, inst in rows:
        table.add_row(b.name, b.family, b.precision, human_bytes(b.total_size),
                      "yes" if inst else "", _expected(b))
    stdout_console().print(table)
    for name, err in manager.catalogue.errors.items():
        stderr_console().print(f"[yellow]rejected bundle {name}:[/yellow] {err}")


@app.command("show")
def show(name: str = typer.Argument(..., help="Bundle name, e.g. nvfp4-zimage."),
         root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Show a bundle's files, sizes, what is already present and what is gated."""
    STATE.json = as_json
    manager = manager_for(root)
    bundle, statuses, installed = manager.bundle_status(name)
    if as_json:
        print_json({"name": bundle.name, "title": bundle.title, "family": bundle.family,
                    "precision": bundle.precision, "licence": bundle.licence,
                    "gated": bundle.gated, "installed": installed, "size": bundle.total_size,
                    "origin": bundle.origin, "expected": [e.__dict__ for e in bundle.expected],
                    "files": [{"role": s.file.role, "path": s.file.relpath,
                               "source": s.file.source.text, "size": s.file.size,
                               "sha256": s.file.sha256, "format": s.file.format,
                               "gated": s.file.gated, "state": s.state} for s in statuses]})
        return
    out = stdout_console()
    out.print(f"[bold]{bundle.name}[/bold]  {bundle.title}")
    out.print(f"family {bundle.family}, precision {bundle.precision}, licence {bundle.licence}"
              + (" (gated: accept it on the repo page, set HF_TOKEN)" if bundle.gated else ""))
    if bundle.description:
        out.print(bundle.description)
    for s in statuses:  # two lines per file: paths and sources stay whole at 80 columns
        out.print(f"{s.state:>10}  {s.file.relpath}", markup=False)
        out.print(f"{'':>10}  {s.file.role}, {s.file.format}, {human_bytes(s.file.size)}"
                  f"{', gated' if s.file.gated else ''} — {s.file.source.text}", markup=False)
    missing = sum(s.file.size or 0 for s in statuses if s.state != "present")
    out.print(f"total {human_bytes(bundle.total_size)}; still to fetch {human_bytes(missing)}"
              f"; {'installed' if installed else 'not installed'} under {manager.root}")
    for e in bundle.expected:
        out.print(f"expected: {e.it_s:g} it/s at {e.width}x{e.height}, {e.steps} steps on {e.gpu}"
                  f" (±{e.tolerance:.0%}){' — ' + e.source if e.source else ''}")


def pull_bundle(name: str, root: Optional[Path], dry_run: bool, as_json: bool,
                connections: Optional[int], limit_rate: Optional[int]) -> int:
    STATE.json = as_json
    manager = manager_for(root, connections=connections, limit_rate=limit_rate)
    console = stderr_console()
    report: InstallReport = run(run_with_progress(
        manager.progress, manager.install_bundle(name, dry_run=dry_run),
        progress_mode(as_json or dry_run), console))
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    failed = [f.error for f in report.files if f.error is not None]
    return failed[0].exit_code if failed else 0


def _print_report(report: InstallReport) -> None:
    out = stdout_console()
    if report.nothing_to_do:
        out.print(f"{report.bundle} is already installed under {report.root}; nothing to do "
                  f"({report.seconds:.2f}s)")
        return
    for f in report.files:
        mark = {"present": "=", "downloaded": "✓", "planned": "+", "failed": "✗"}[f.state]
        line = f"{mark} {f.relpath}  {human_bytes(f.size)}  {f.state}"
        out.print(line + (f"\n  {f.error}" if f.error else ""), markup=False)
    if report.dry_run:
        out.print(f"dry run: would fetch {human_bytes(report.to_fetch)} into {report.root}; "
                  "disk space is sufficient")
    elif report.ok:
        out.print(f"{report.bundle} installed under {report.root} in {report.seconds:.1f}s")
