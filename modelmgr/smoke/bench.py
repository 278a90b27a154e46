"""``modelmgr bench``: several variants, one seed and one set of settings, compared.

Each variant is a full smoke run (runner.run_variant), one after the other with the GPU emptied
in between. Speed is compared with the baseline (``--baseline``, else the BF16 variant, else the
first); quality is compared with the BF16 run (else the baseline): PSNR and cosine similarity of
the final latent and of the picture. A variant that fails to load becomes a row with its error,
so one bad file does not hide the others' numbers. Text conditioning, when asked for, is encoded
once (with the first variant's text encoders) and every variant gets the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import ModelMgrError, UsageError
from .gpu_info import DeviceInfo
from .quality import Quality, compare
from .runner import Options, VariantRun, encode_text, run_variant, settings_for
from .targets import Target

FULL_PRECISION = ("bf16", "fp16", "fp32")


@dataclass
class BenchRow:
    target: Target
    run: VariantRun | None = None
    error: str | None = None
    speedup: float | None = None
    quality: Quality | None = None

    @property
    def label(self) -> str:
        return self.target.label


@dataclass
class BenchReport:
    device: DeviceInfo
    width: int
    height: int
    steps: int
    seed: int
    rows: list[BenchRow] = field(default_factory=list)
    baseline: str = ""
    quality_reference: str = ""

    def to_dict(self) -> dict:
        return {"device": self.device.to_dict(), "width": self.width, "height": self.height, "steps": self.steps,
                "seed": self.seed, "baseline": self.baseline, "quality_reference": self.quality_reference,
                "variants": [{"label": r.label, "error": r.error, "speedup": r.speedup,
                              "quality": r.quality.to_dict() if r.quality else None,
                              "result": r.run.result.to_dict() if r.run else None} for r in self.rows]}


def _release(device: DeviceInfo) -> None:
    """Empty the GPU between variants (a failed one may have left tensors behind)."""
    import gc

    gc.collect()
    if device.is_gpu:
        from . import deps

        deps.torch().cuda.empty_cache()


def _pick(rows: list[BenchRow], name: str | None) -> BenchRow | None:
    done = [r for r in rows if r.run is not None]
    if name:
        for r in done:
            if name in (r.label, r.target.path.name, str(r.target.path), r.run.result.precision):
                return r
        raise UsageError(f"--baseline {name!r} matches none of the variants that ran",
                         "give a bundle name, a file name or a precision such as bf16")
    full = [r for r in done if r.run.result.precision in FULL_PRECISION]
    return (full or done or [None])[0]


def run_bench(targets: list[Target], options: Options, device: DeviceInfo, baseline: str | None = None,
              on_row: Callable[[BenchRow], None] | None = None) -> BenchReport:
    """Run every target with the same settings, then compare (module docstring)."""
    if not targets:
        raise UsageError("bench needs at least one bundle or file")
    width, height, steps = settings_for(targets[0], options, device)
    fixed = replace(options, width=width, height=height, steps=steps)
    report = BenchReport(device, width, height, steps, options.seed)
    text = encode_text(targets, options, device) if options.wants_text_encoder else None
    for target in targets:
        row = BenchRow(target)
        try:
            row.run = run_variant(target, fixed, device, text)
        except ModelMgrError as err:
            row.error = err.message
        except Exception as err:  # noqa: BLE001 - e.g. a CUDA error in one variant: report it, run the rest
            row.error = f"internal error: {type(err).__name__}: {str(err)[:300]}"
        _release(device)
        report.rows.append(row)
        if on_row is not None:
            on_row(row)
    base = _pick(report.rows, baseline)
    full = [r for r in report.rows if r.run is not None and r.run.result.precision in FULL_PRECISION]
    ref = full[0] if full else base
    report.baseline = base.label if base else ""
    report.quality_reference = ref.label if ref else ""
    for row in report.rows:
        if row.run is None:
            continue
        family = row.run.result.family
        if base is not None and base.run.result.family == family and base.run.result.it_s > 0:
            row.speedup = row.run.result.it_s / base.run.result.it_s
        if ref is not None and ref.run.result.family == family:
            row.quality = compare(row.run.latent, ref.run.latent, row.run.image, ref.run.image)
    return report
