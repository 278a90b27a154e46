"""``modelmgr ls|inspect|verify|scan|rm`` and ``modelmgr comfyui extra-paths``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ExitCode
from .common import STATE, manager_for, print_json, stdout_console
from .options import JSON, ROOT
from .render import human_bytes


def ls(root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """List the recorded assets by ComfyUI folder: size, precision, family, bundles, last check."""
    STATE.json = as_json
    rows = manager_for(root).assets()
    if as_json:
        print_json({"assets": [dict(a.to_dict(), bundles=users) for a, users in rows]})
        return
    table = Table("path", "size", "format", "precision", "family", "bundles", "verified",
                  box=None)
    for a, users in rows:
        table.add_row(a.path, human_bytes(a.size), a.format or "?", a.precision or "?",
                      a.family or "", ",".join(users), a.verify_status or "")
    stdout_console().print(table)


def inspect(target: str = typer.Argument(..., help="A file, a recorded asset path, or a bundle."),
            root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Show what is inside a model file, from its header only (never loads tensors)."""
    STATE.json = as_json
    results = manager_for(root).inspect(target)
    if as_json:
        print_json({"files": [dict(ins.to_dict(), name=name) for name, ins in results]})
        return
    out = stdout_console()
    for name, ins in results:
        out.print(f"[bold]{name}[/bold]")
        out.print(f"  format {ins.format}, precision {ins.precision}, family "
                  f"{ins.family or '?'}{':' + ins.variant if ins.variant else ''}, role {ins.role}")
        out.print(f"  {ins.tensor_count} tensors, {ins.param_count:,} parameters, "
                  f"{human_bytes(ins.file_size)}")
        if ins.dtype_bytes:
            out.print("  bytes per dtype: " + ", ".join(
                f"{k} {human_bytes(v)}" for k, v in sorted(ins.dtype_bytes.items(),
                                                             key=lambda kv: -kv[1])))
        if ins.quant_layers:
            out.print("  quantized layers: " + ", ".join(f"{k} {v}"
                                                         for k, v in ins.quant_layers.items()))
        if ins.unsafe:
            out.print("  [red]unsafe: pickle file (never loaded)[/red]")
        for w in ins.warnings:
            out.print(f"  [yellow]warning:[/yellow] {w}")


def verify(deep: bool = typer.Option(False, "--deep", help="Re-hash every file."),
           root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Check every asset: size, mtime and header (quick) or its full hash (--deep)."""
    STATE.json = as_json
    report = manager_for(root).verify(deep)
    if as_json:
        print_json({"ok": report.ok, "seconds": round(report.seconds, 3),
                    "bytes_hashed": report.bytes_hashed,
                    "files": [{"path": a.path, "status": st, "detail": d}
                              for a, st, d in report.results]})
    else:
        out = stdout_console()
        for a, st, detail in report.results:
            out.print(f"{'✓' if st == 'ok' else '✗'} {a.path}: {st} ({detail})", markup=False)
        rate = (f", {human_bytes(report.bytes_hashed / report.seconds)}/s"
                if report.bytes_hashed and report.seconds else "")
        out.print(f"{len(report.results)} files checked in {report.seconds:.2f}s{rate}")
    if not report.ok:
        raise typer.Exit(ExitCode.INTEGRITY)


def scan(folder: Optional[Path] = typer.Argument(
             None, help="Folder to adopt in place; it becomes the root unless --root is given."),
         root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Adopt an existing ComfyUI models folder in place: record and inspect every model file."""
    STATE.json = as_json
    manager = manager_for(root or folder)
    report = manager.scan(folder)
    if as_json:
        print_json({"root": str(manager.root), "added": report.added, "updated": report.updated,
                    "unchanged": report.unchanged, "gone": report.gone,
                    "problems": [{"path": p, "error": e} for p, e in report.problems],
                    "seconds": round(report.seconds, 3)})
        return
    out = stdout_console()
    for path, err in report.problems:
        out.print(f"✗ {path}: {err}", markup=False)
    out.print(f"{len(report.added)} added, {len(report.updated)} updated, {report.unchanged} "
              f"unchanged, {len(report.gone)} gone, {len(report.problems)} with problems "
              f"under {manager.root} ({report.seconds:.2f}s)")


def rm(name: str = typer.Argument(..., help="An installed bundle, or a file under the root."),
       root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Remove an installed bundle (keeping files other bundles need) or one file."""
    STATE.json = as_json
    deleted, kept = manager_for(root).remove(name)
    if as_json:
        print_json({"deleted": deleted, "kept": kept})
        return
    out = stdout_console()
    for rel in deleted:
        out.print(f"deleted {rel}", markup=False)
    for rel in kept:
        out.print(f"kept {rel}", markup=False)


comfyui = typer.Typer(no_args_is_help=True, help="ComfyUI integration.")


@comfyui.command("extra-paths")
def extra_paths(output: Optional[Path] = typer.Option(
                    None, "--output", "-o",
                    help="Write or update this extra_model_paths.yaml (default: print it)."),
                root: Optional[Path] = ROOT) -> None:
    """Write an extra_model_paths.yaml that points ComfyUI at the models root."""
    manager = manager_for(root)
    text = manager.extra_model_paths()
    if output is None:
        print(text, end="")
        return
    from ..library.layout import merge_extra_model_paths

    output.write_text(merge_extra_model_paths(output.read_text() if output.exists() else "", text))
    stdout_console().print(f"wrote {output}; ComfyUI reads it from its base folder at start-up",
                           markup=False)
