"""One smoke run: load the variant, sample, decode, measure, judge.

``run_variant`` is shared by ``smoke`` (one target) and ``bench`` (several, same seed and
settings), so both measure exactly the same way. Each run frees its model before the next, and
the VAE is loaded only after the diffusion model is gone, so peak VRAM is the diffusion model's.
Text conditioning, when asked for, is encoded before the diffusion model loads and its encoder
freed (text/__init__.py); ``bench`` encodes once and passes the same conditioning to every run.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from . import deps
from .gpu_info import DeviceInfo
from .results import SmokeResult, default_settings, judge
from .targets import Target

GPU_DEFAULT = (1024, 1024, 8)
CPU_DEFAULT = (64, 64, 2)
"""Without a reference: 1024² × 8 steps on a GPU; a 64² plumbing check on the CPU."""


@dataclass(frozen=True)
class Options:
    """Settings of a run (None: from the bundle's reference for this GPU, else the defaults)."""

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int = 0
    act_mode: str = "static"
    """FP8 activation scales: ``static`` (calibrated on the warm-up step) or ``dynamic``."""
    decode: bool = True
    """Decode with the VAE when there is one."""
    image_dir: Path | None = None
    """Where PNGs go (None: no file written)."""
    text_encoder: bool = False
    """Condition on the target's text encoder(s) instead of the seeded embedding."""
    prompt: str | None = None
    """The prompt to encode (implies ``text_encoder``); it needs a tokenizer."""
    tokenizers: tuple[Path, ...] = ()
    """``--tokenizer`` folders, tried before embedded tokenizers and the Hugging Face cache."""

    @property
    def wants_text_encoder(self) -> bool:
        return self.text_encoder or self.prompt is not None


@dataclass
class VariantRun:
    target: Target
    result: SmokeResult
    latent: object
    """Final latent (CPU float32)."""
    image: object
    """``[H, W, 3]`` uint8: decoded, or a latent preview when there is no VAE."""
    png: bytes


def settings_for(target: Target, options: Options, device: DeviceInfo) -> tuple[int, int, int]:
    """(width, height, steps) for this run (explicit options win)."""
    from .sampler import check_resolution

    default = (default_settings(target.references, device.name) if device.is_gpu else None) or \
        (GPU_DEFAULT if device.is_gpu else CPU_DEFAULT)
    width = options.width or default[0]
    height = options.height or default[1]
    steps = options.steps or default[2]
    check_resolution(width, height)
    if steps < 1 or steps > 1000:
        raise UsageError(f"--steps {steps}: give 1 to 1000")
    return width, height, steps


def select(device: DeviceInfo) -> None:
    """Make ``device`` the current CUDA device: the Triton kernels (triton_kernels.py) launch on
    the current device, so with ``--device cuda:1`` they must not run on GPU 0."""
    if device.is_gpu:
        torch = deps.torch()
        torch.cuda.set_device(torch.device(device.device).index or 0)


@contextmanager
def gpu_memory_guard(device: DeviceInfo, what: str):
    """A CUDA out-of-memory inside becomes a UsageError that says what did not fit and what to try
    (the smoke test asks for a model the GPU may simply be too small for: not a bug)."""
    torch = deps.torch()
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        pass  # handled below, outside the handler, so the error's frames (and tensors) are released first
    else:
        return
    _free(device)
    total = f" of {device.memory_bytes / 2**30:.0f} GiB" if device.memory_bytes else ""
    raise UsageError(f"{device.label}: out of GPU memory{total} while {what}",
                     "try a smaller variant (FP8, NVFP4, Q8_0), a lower --resolution, or free the GPU "
                     "(nvidia-smi lists what holds it)")


def encode_text(targets: list[Target], options: Options, device: DeviceInfo):
    """The text encoder's conditioning for ``targets`` (the first one that has encoders), on the CPU."""
    from . import text

    select(device)
    with gpu_memory_guard(device, "running the text encoder"):
        return text.encode(targets, seed=options.seed, prompt=options.prompt, tokenizers=options.tokenizers,
                           device=device.device)


def run_variant(target: Target, options: Options, device: DeviceInfo, text=None) -> VariantRun:
    """Load, sample, decode and judge one variant (module docstring).

    ``text`` is a :class:`~.sampler.Conditioning` from :func:`encode_text`; without one, the text
    encoder runs here when the options ask for it, else the seeded embedding is used.
    """
    from . import loader, png, sampler, vae as vae_mod
    from .reader import open_model

    torch = deps.torch("the smoke test")
    deps.diffusers("the smoke test")
    width, height, steps = settings_for(target, options, device)
    select(device)
    if text is None and options.wants_text_encoder:
        text = encode_text([target], options, device)
    model_file = open_model(target.path)
    if device.is_gpu:
        gc.collect()
        torch.cuda.empty_cache()
        torch.zeros(1, device=device.device)  # CUDA context start-up is not the file's load time
        torch.cuda.synchronize(device.device)
        torch.cuda.reset_peak_memory_stats(device.device)
    with gpu_memory_guard(device, f"loading {target.path.name}"):
        loaded = loader.load(model_file, device, act_mode=options.act_mode)
    if text is None:
        cond = sampler.seeded_conditioning(loaded.arch, options.seed, device.device, loaded.dtype)
    else:
        text.check(loaded.arch, target.path.name)
        cond = text.to(device.device, loaded.dtype)
    with gpu_memory_guard(device, f"sampling {target.path.name} at {width}x{height}"):
        sample = sampler.sample(loaded.module, loaded.arch, cond, width=width, height=height, steps=steps,
                                seed=options.seed, device=device.device, dtype=loaded.dtype)
    peak = torch.cuda.max_memory_allocated(device.device) if device.is_gpu else None
    arch = loaded.arch
    result = SmokeResult(
        file=str(target.path), precision=model_file.inspection.precision, family=arch.family,
        device=device.to_dict(), width=width, height=height, steps=steps, seed=options.seed,
        it_s=sample.it_s, step_ms=[round(m, 3) for m in sample.step_ms], warmup_s=sample.warmup_s,
        load_s=loaded.seconds, load_gb_s=loaded.transfer.gb_per_s, load_bytes=loaded.transfer.bytes,
        weight_bytes=loaded.device_bytes, peak_vram_bytes=peak, finite=sample.finite,
        layers=loaded.formats_line(), conditioning=cond.source, bundle=target.bundle.name if target.bundle else None,
        asset=target.asset, arch_note=arch.note, act_mode=options.act_mode, kernels=_kernels(), at=time.time(),
        text_encoder_load_s=cond.load_s, text_encoder_encode_s=cond.encode_s)
    del loaded, cond
    _free(device)
    if options.decode and target.vae is not None:
        with gpu_memory_guard(device, f"decoding with {target.vae.name}"):
            vae = vae_mod.load_vae(target.vae, device.device)
            image = vae_mod.decode(vae, sample.latent, arch)
        result.picture = f"decoded with {target.vae.name}"
        del vae
        _free(device)
    else:
        image = vae_mod.preview(sample.latent)
        result.picture = "latent preview (no VAE)" if target.vae is None else "latent preview (decoding off)"
    result.finite = result.finite and bool(torch.isfinite(sample.latent).all())
    data = png.from_tensor(image)
    if options.image_dir is not None:
        options.image_dir.mkdir(parents=True, exist_ok=True)
        out = options.image_dir / f"{_slug(target.label)}-{width}x{height}-seed{options.seed}.png"
        out.write_bytes(data)
        result.image = str(out)
    result.verdict, result.reason, ref = judge(result, target.references, device.is_gpu)
    if ref is not None:
        result.reference = {"gpu": ref.gpu, "it_s": ref.it_s, "tolerance": ref.tolerance,
                            "resolution": f"{ref.width}x{ref.height}", "source": ref.source}
    return VariantRun(target, result, sample.latent, image, data)


def _kernels() -> dict:
    from . import triton_kernels
    from .quant import base

    return {**triton_kernels.status(), "compiled": base.compile_status()}


def _free(device: DeviceInfo) -> None:
    gc.collect()
    if device.is_gpu:
        deps.torch().cuda.empty_cache()


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return keep.strip("-")[:80] or "model"
