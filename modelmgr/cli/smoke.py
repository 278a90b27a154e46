"""``modelmgr smoke``, ``modelmgr bench`` and ``modelmgr quantize``: the GPU proof of a variant.

Thin: options are parsed and checked here, everything else is :mod:`modelmgr.smoke.api` (which
imports torch/diffusers only when it runs, so ``modelmgr --help`` never needs them).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ExitCode, UsageError
from ..library.layout import STATE_DIR
from .common import STATE, manager_for, print_json, stderr_console, stdout_console
from .options import JSON, ROOT
from .render import human_bytes

STEPS = typer.Option(None, "--steps", help="Sampling steps (default: the bundle's reference, else 8; 2 on CPU).")
RESOLUTION = typer.Option(None, "--resolution", help="WxH, e.g. 1536x1536 (default: the reference's, else 1024x1024).")
DEVICE = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: the first GPU, else the CPU).")
SEED = typer.Option(0, "--seed", help="Seed of the noise and of the seeded text embedding (or token ids).")
ACT = typer.Option("static", "--fp8-activations",
                   help="FP8 activation scales: static (calibrated on the warm-up step) or dynamic (per call).")
NO_DECODE = typer.Option(False, "--no-decode", help="Do not decode with the VAE (save a latent preview).")
PROMPT = typer.Option(
    None, "--prompt", metavar="<text>",
    help="Condition on this prompt, encoded by the text encoder(s): the bundle's, or --text-encoder. Needs a "
         "tokenizer: --tokenizer, one embedded in the file, or the local Hugging Face cache (never downloaded).")
WITH_TE = typer.Option(
    False, "--with-text-encoder",
    help="Condition on the bundle's text encoder(s) instead of a seeded embedding: a default prompt when tokenizers "
         "are found, else seeded token ids through the real encoder (the output says which). Default: the seeded "
         "embedding, fast and needing nothing.")
TEXT_ENCODER = typer.Option(
    None, "--text-encoder", metavar="<path>",
    help="A text-encoder file to condition with (implies --with-text-encoder); repeat for FLUX.1's clip_l and "
         "t5xxl. Replaces a bundle's own.")
TOKENIZER = typer.Option(
    None, "--tokenizer", metavar="<dir>",
    help="A folder with tokenizer.json or spiece.model, or a diffusers pipeline folder (tokenizer/, tokenizer_2/); "
         "tried first, implies --with-text-encoder. Repeatable: each encoder takes the one that fits its vocabulary.")
_RES = re.compile(r"^(\d+)[xX](\d+)$")


def _options(steps: Optional[int], resolution: Optional[str], seed: int, act: str, no_decode: bool,
             image_dir: Optional[Path], prompt: Optional[str] = None, with_te: bool = False,
             text_encoders: Optional[list[Path]] = None, tokenizers: Optional[list[Path]] = None):
    from ..smoke.runner import Options

    width = height = None
    if resolution is not None:
        m = _RES.match(resolution.strip())
        if not m:
            raise UsageError(f"--resolution {resolution!r} is not WxH", "e.g. --resolution 1024x1024")
        width, height = int(m.group(1)), int(m.group(2))
    if act not in ("static", "dynamic"):
        raise UsageError(f"--fp8-activations {act!r}: use static or dynamic")
    if prompt is not None and not prompt.strip():
        raise UsageError("--prompt is empty", "give the text to encode, or --with-text-encoder for a default one")
    return Options(width=width, height=height, steps=steps, seed=seed, act_mode=act, decode=not no_decode,
                   image_dir=image_dir, text_encoder=with_te or bool(text_encoders) or bool(tokenizers), prompt=prompt,
                   tokenizers=tuple(tokenizers or ()))


def _gib(n: Optional[int]) -> str:
    return "n/a (CPU)" if n is None else f"{n / 2**30:.2f} GiB"


def smoke(target: str = typer.Argument(..., help="A bundle name, a recorded asset path or a model file."),
          steps: Optional[int] = STEPS, resolution: Optional[str] = RESOLUTION, device: Optional[str] = DEVICE,
          seed: int = SEED, fp8_activations: str = ACT, no_decode: bool = NO_DECODE,
          vae: Optional[Path] = typer.Option(None, "--vae", help="A VAE file to decode with (files only)."),
          prompt: Optional[str] = PROMPT, with_text_encoder: bool = WITH_TE,
          text_encoder: Optional[list[Path]] = TEXT_ENCODER, tokenizer: Optional[list[Path]] = TOKENIZER,
          output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                help="Folder for the PNG (default <root>/.modelmgr/smoke)."),
          root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Load a variant on the GPU in its stored format, sample a few steps, report it/s and the verdict."""
    from ..smoke import api

    STATE.json = as_json
    options = _options(steps, resolution, seed, fp8_activations, no_decode, None, prompt, with_text_encoder,
                       text_encoder, tokenizer)
    manager = manager_for(root)
    info = api.device_info(device)
    image_dir = output or manager.root / STATE_DIR / "smoke"
    result, recorded = api.smoke(manager, target, replace(options, image_dir=image_dir), info, vae,
                                 tuple(text_encoder or ()))
    if as_json:
        print_json({"ok": result.verdict != "FAIL", "result": result.to_dict(), "recorded": recorded})
    else:
        _print_smoke(result, recorded, info.label)
    if result.verdict == "FAIL":
        raise typer.Exit(ExitCode.INTEGRITY)


def _print_smoke(r, recorded: bool, device: str) -> None:
    out = stdout_console()
    rows = [
        ("device", device),
        ("file", f"{r.file} ({r.precision}, {r.family}{'; ' + r.arch_note if r.arch_note else ''})"),
        ("layers", r.layers),
        ("load", f"{r.load_s:.2f} s; {human_bytes(r.load_bytes)} to the device at {r.load_gb_s:.2f} GB/s"),
        ("speed", f"{r.it_s:.3f} it/s ({r.steps} steps at {r.width}x{r.height}, warm-up {r.warmup_s:.1f} s "
                  "excluded)"),
        ("peak VRAM", _gib(r.peak_vram_bytes)),
        ("output", "finite" if r.finite else "NOT FINITE (NaN/inf)"),
        ("conditioning", r.conditioning),
        *([("text encoder", f"{r.text_encoder_load_s:.2f} s load, {r.text_encoder_encode_s:.2f} s encode (freed "
                            "before the model loaded)")] if r.text_encoder_load_s else []),
        ("image", f"{r.image or 'not saved'} ({r.picture})"),
        ("verdict", f"{r.verdict}: {r.reason}"),
        ("registry", "recorded on the asset" if recorded else "not recorded (the file is not a registry asset)"),
    ]
    for key, value in rows:
        out.print(f"{key:>13}  {value}", markup=False, highlight=False)


def bench(targets: list[str] = typer.Argument(..., help="Bundles, recorded assets or model files to compare."),
          baseline: Optional[str] = typer.Option(None, "--baseline",
                                                 help="Variant to compare speed with (default: the BF16 one)."),
          steps: Optional[int] = STEPS, resolution: Optional[str] = RESOLUTION, device: Optional[str] = DEVICE,
          seed: int = SEED, fp8_activations: str = ACT, no_decode: bool = NO_DECODE,
          prompt: Optional[str] = PROMPT, with_text_encoder: bool = WITH_TE,
          text_encoder: Optional[list[Path]] = TEXT_ENCODER, tokenizer: Optional[list[Path]] = TOKENIZER,
          report: Path = typer.Option(Path("modelmgr-bench.html"), "--report",
                                      help="Where to write the HTML report (images inline)."),
          root: Optional[Path] = ROOT, as_json: bool = JSON) -> None:
    """Run variants with the same seed and settings: it/s, speedup, VRAM, load time, quality vs BF16.

    With text conditioning, the first variant's text encoder(s) run once and every variant gets
    the same conditioning.
    """
    from ..smoke import api
    from ..smoke.report_html import HEADERS, table_rows

    STATE.json = as_json
    options = _options(steps, resolution, seed, fp8_activations, no_decode, None, prompt, with_text_encoder,
                       text_encoder, tokenizer)
    manager = manager_for(root)
    info = api.device_info(device)
    err = stderr_console()

    def progress(row) -> None:
        if not as_json:
            what = row.error or f"{row.run.result.it_s:.3f} it/s"
            err.print(f"  {row.label}: {what}", markup=False, highlight=False)

    if not as_json:
        err.print(f"bench on {info.label}", markup=False, highlight=False)
    result = api.bench(manager, targets, options, info, baseline=baseline, report=report, on_row=progress,
                       text_encoders=tuple(text_encoder or ()))
    if as_json:
        print_json(dict(result.to_dict(), report=str(report)))
        return
    table = Table(*HEADERS, box=None, title=f"{info.label} · {result.width}x{result.height} · {result.steps} steps "
                                            f"· speedup vs {result.baseline} · quality vs {result.quality_reference}")
    for cells in table_rows(result):
        table.add_row(*cells)
    out = stdout_console()
    out.print(table)
    out.print(f"report: {report}", markup=False)


def quantize(src: Path = typer.Argument(..., help="A BF16/FP16/FP32 diffusion-model .safetensors file."),
             dst: Path = typer.Argument(..., help="The output file (.safetensors, or .gguf for q8_0)."),
             to: str = typer.Option(..., "--to", help="fp8-scaled | nvfp4 | q8_0"),
             device: Optional[str] = DEVICE,
             force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
             as_json: bool = JSON) -> None:
    """Quantize a diffusion model into exactly the layouts ComfyUI loads, tensor by tensor."""
    from ..smoke import api

    STATE.json = as_json
    if not src.is_file():
        raise UsageError(f"{src}: no such file")
    rep = api.quantize(src, dst, to, device=device, force=force)
    doc = {"output": str(rep.output), "to": rep.to, "quantized_layers": rep.quantized, "kept": rep.kept,
           "seconds": round(rep.seconds, 2), "bytes_in": rep.bytes_in, "bytes_out": rep.bytes_out,
           "precision": rep.inspection.precision, "family": rep.inspection.family}
    if as_json:
        print_json(doc)
        return
    stdout_console().print(
        f"wrote {rep.output}: {rep.inspection.precision} ({rep.inspection.family}), {rep.quantized} layers "
        f"quantized, {rep.kept} tensors kept, {human_bytes(rep.bytes_in)} → {human_bytes(rep.bytes_out)} "
        f"in {rep.seconds:.1f} s", markup=False, highlight=False)
