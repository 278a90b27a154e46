"""The text of the TUI's detail panes and modals, built from service results.

Pure functions from value objects to Rich ``Text`` (never markup strings: file names and error
messages may contain ``[`` and must be shown as they are). Sizes use the CLI's ``human_bytes`` so
both front ends print the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.text import Text

from modelmgr.catalogue.model import Bundle
from modelmgr.cli.render import human_bytes
from modelmgr.library.library import FileStatus, VerifyReport
from modelmgr.registry.store import Asset

HEADING = "bold"
MUTED = "dim"
GOOD = "green"
BAD = "red"
WARN = "yellow"


def expected_speed(bundle: Bundle) -> str:
    """The bundle's first published speed for the table (the details pane says at what size, on
    which GPU): short, so that the catalogue fits 80 columns."""
    return f"{bundle.expected[0].it_s:g} it/s" if bundle.expected else "-"


def speed(bps: float | None) -> str:
    return "-" if not bps else f"{human_bytes(bps)}/s"


def eta(seconds: float | None) -> str:
    """``1:05`` under an hour, ``2h05`` above (five columns at most below 100 hours)."""
    if seconds is None or seconds < 0 or seconds != seconds:
        return "-"
    s = int(seconds + 0.5)
    if s >= 3600:
        h, rest = divmod(s, 3600)
        return f"{h}h{rest // 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def when(timestamp: float | None) -> str:
    """A Unix time in local time, to the minute."""
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _line(text: Text, label: str, value: str, style: str = "") -> None:
    text.append(f"{label:<12}", MUTED)
    text.append(f"{value}\n", style)


def bundle_details(bundle: Bundle, statuses: list[FileStatus], installed: bool) -> Text:
    """A bundle's title, facts, expected speeds and each file with what is already present."""
    out = Text()
    out.append(f"{bundle.name}", HEADING)
    out.append(f"  {bundle.title}\n")
    if bundle.description:
        out.append(f"{bundle.description}\n", MUTED)
    _line(out, "family", bundle.family)
    _line(out, "precision", bundle.precision)
    _line(out, "licence", bundle.licence + ("  (gated: accept it on the repo page, set HF_TOKEN)"
                                            if bundle.gated else ""))
    missing = sum(s.file.size or 0 for s in statuses if s.state != "present")
    unknown = any(s.file.size is None for s in statuses if s.state != "present")
    _line(out, "size", f"{human_bytes(bundle.total_size)} total, "
                       f"{'?' if unknown else human_bytes(missing)} still to fetch")
    _line(out, "state", "installed" if installed else "not installed", GOOD if installed else "")
    for e in bundle.expected:
        _line(out, "expected", f"{e.it_s:g} it/s at {e.width}x{e.height}, {e.steps} steps on "
                               f"{e.gpu} (±{e.tolerance:.0%})")
    out.append("\nfiles\n", HEADING)
    for s in statuses:
        mark, style = ("✓", GOOD) if s.state == "present" else ("·", MUTED) \
            if s.state == "missing" else ("!", WARN)
        out.append(f"{mark} ", style)
        out.append(f"{s.file.relpath}\n")
        size = human_bytes(s.asset.size if s.asset else s.file.size)
        out.append(f"  {s.file.role}, {s.file.format}, {size}, ", MUTED)
        out.append(s.state + (" (gated)" if s.file.gated else "") + "\n", style)
    return out


def inspection_details(ins: dict) -> Text:
    """What the header says: the fields of an ``Inspection.to_dict()``."""
    out = Text()
    family = (ins.get("family") or "?") + (f":{ins['variant']}" if ins.get("variant") else "")
    _line(out, "format", ins.get("format") or "?")
    _line(out, "precision", ins.get("precision") or "?")
    _line(out, "family", family)
    _line(out, "role", ins.get("role") or "?")
    _line(out, "parameters", f"{ins.get('param_count', 0):,}")
    _line(out, "tensors", f"{ins.get('tensor_count', 0):,}")
    dtypes = sorted((ins.get("dtype_bytes") or {}).items(), key=lambda kv: -kv[1])
    if dtypes:
        out.append("bytes per dtype\n", MUTED)
        for name, n in dtypes:
            out.append(f"  {name:<10}{human_bytes(n):>12}\n")
    quant = ins.get("quant_layers") or {}
    if quant:
        _line(out, "quantized", ", ".join(f"{k} {v}" for k, v in quant.items()))
    if ins.get("unsafe"):
        out.append("unsafe: pickle file (never loaded)\n", BAD)
    for warning in ins.get("warnings") or ():
        out.append("warning: ", WARN)
        out.append(f"{warning}\n")
    return out


def asset_details(asset: Asset, users: list[str]) -> Text:
    """Everything the registry knows about one file: header facts, hashes, checks, smoke."""
    out = Text()
    out.append(f"{asset.path}\n", HEADING)
    _line(out, "size", f"{human_bytes(asset.size)} ({asset.size:,} bytes)")
    if asset.inspection:
        out.append_text(inspection_details(asset.inspection))
    else:
        _line(out, "format", asset.format or "?")
        _line(out, "precision", asset.precision or "?")
        _line(out, "family", asset.family or "?")
    if asset.inspect_error:
        out.append("inspection failed: ", BAD)
        out.append(f"{asset.inspect_error}\n")
    out.append("\nprovenance\n", HEADING)
    _line(out, "sha256", asset.sha256 or "not computed (verify --deep records it)")
    if asset.blake3:
        _line(out, "blake3", asset.blake3)
    _line(out, "source", asset.source or "adopted in place (scan)")
    if asset.revision:
        _line(out, "revision", asset.revision)
    _line(out, "installed", "by modelmgr" if asset.managed else "not by modelmgr (never deleted)")
    _line(out, "bundles", ", ".join(users) or "none")
    out.append("\nlast verification\n", HEADING)
    if asset.verify_status:
        _line(out, "result", asset.verify_status, GOOD if asset.verify_status == "ok" else BAD)
        _line(out, "detail", asset.verify_detail or "")
    _line(out, "when", when(asset.verified_at))
    out.append("\nsmoke test\n", HEADING)
    if asset.smoke:
        out.append_text(_mapping(asset.smoke))
    else:
        out.append("not run\n", MUTED)
    return out


def _mapping(data: Mapping[str, Any]) -> Text:
    out = Text()
    for key, value in data.items():
        _line(out, str(key), str(value))
    return out


def smoke_result(result: Any) -> Text:
    """Whatever ``ModelManager.smoke`` returns: its fields one per line, else its text."""
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    elif is_dataclass(result) and not isinstance(result, type):
        result = asdict(result)
    return _mapping(result) if isinstance(result, Mapping) else Text(str(result))


def inspections(results: Iterable[tuple[str, dict]]) -> Text:
    """The inspect modal: one block per inspected file."""
    out = Text()
    for name, ins in results:
        out.append(f"{name}\n", HEADING)
        out.append_text(inspection_details(ins))
        out.append("\n")
    return out


def verify_report(report: VerifyReport, deep: bool) -> Text:
    """The verify modal: the CLI's per-file lines, problems first, then the summary."""
    out = Text()
    ordered = sorted(report.results, key=lambda r: (r[1] == "ok", r[0].path))
    for asset, status, detail in ordered:
        good = status == "ok"
        out.append("✓ " if good else "✗ ", GOOD if good else BAD)
        out.append(f"{asset.path}: {status} ({detail})\n")
    kind = "deep (re-hashed)" if deep else "quick (size, mtime, header)"
    bad = sum(1 for _, status, _ in report.results if status != "ok")
    out.append(f"\n{len(report.results)} files checked, {kind}: ", MUTED)
    out.append("all ok" if not bad else f"{bad} with problems", GOOD if not bad else BAD)
    return out


def removal(deleted: list[str], kept: list[str]) -> Text:
    """The remove result: what went, what stayed and why."""
    out = Text()
    for rel in deleted:
        out.append(f"deleted {rel}\n")
    for rel in kept:
        out.append(f"kept {rel}\n", MUTED)
    if not deleted and not kept:
        out.append("nothing to delete\n", MUTED)
    return out
