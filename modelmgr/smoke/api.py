"""The smoke package's entry points for front ends (the CLI today, the TUI and daemon later).

Each takes the :class:`~modelmgr.service.ModelManager` for catalogue and registry access,
resolves its targets, runs, records results on the diffusion model's registry asset, and returns
plain result objects the caller renders. torch and diffusers are imported only when a function
runs (MissingExtraError naming the ``gpu`` extra otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .bench import BenchReport, BenchRow, run_bench
from .gpu_info import DeviceInfo, describe, resolve_device
from .quantize import QuantizeReport, quantize_file
from .results import SmokeResult
from .runner import Options, run_variant
from .targets import record, resolve


def device_info(requested: str | None) -> DeviceInfo:
    return describe(resolve_device(requested))


def smoke(manager, target: str, options: Options, device: DeviceInfo, vae: Path | None = None,
          text_encoders: tuple[Path, ...] = ()) -> tuple[SmokeResult, bool]:
    """Run one variant; (result, whether it was recorded in the registry).

    ``text_encoders`` replace the bundle's own (or give a file some); they are used when
    ``options`` ask for text conditioning.
    """
    resolved = resolve(manager, target, vae, text_encoders)
    run = run_variant(resolved, options, device)
    return run.result, record(manager, resolved, run.result.to_dict())


def bench(manager, targets: list[str], options: Options, device: DeviceInfo, *, baseline: str | None = None,
          report: Path | None = None, on_row: Callable[[BenchRow], None] | None = None,
          text_encoders: tuple[Path, ...] = ()) -> BenchReport:
    """Run several variants with one seed and settings; write the HTML report when asked."""
    from .report_html import render

    resolved = [resolve(manager, t, text_encoders=text_encoders) for t in targets]
    result = run_bench(resolved, options, device, baseline, on_row)
    for row in result.rows:
        if row.run is not None:
            record(manager, row.target, row.run.result.to_dict())
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render(result), encoding="utf-8")
    return result


def quantize(src: Path, dst: Path, to: str, *, device: str | None = None, force: bool = False,
             progress: Callable[[str], None] | None = None) -> QuantizeReport:
    return quantize_file(src, dst, to, device=device, force=force, progress=progress)
