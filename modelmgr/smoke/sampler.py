"""The short flow-matching sampling loop, per family, and its timing.

Flow matching: ``x_σ = (1 − σ)·x₀ + σ·ε``; the model predicts the velocity ``ε − x₀`` and Euler
steps walk σ from 1 to 0 on a shifted schedule. One transformer forward per step (distilled
guidance, no CFG), which is what the published it/s figures count. Per family:

* FLUX.1 — 16-channel latents packed 2×2 into 64-wide tokens, 3-axis position ids, T5-width
  text tokens plus a CLIP-width pooled vector, guidance 3.5, resolution-dependent shift;
* FLUX.2 — 32-channel latents patchified 2×2 (128 wide), 4-axis ids, guidance 4.0;
* Z-Image — 16-channel latents as a list of ``[C, 1, H, W]``, caption features, timestep ``1 − σ``,
  output negated (diffusers' pipeline convention), shift 3.0 (Turbo).

Timing uses CUDA events around each step after one warm-up forward (compilation, cuBLAS
heuristics and FP8 activation calibration happen there), so it/s excludes the warm-up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from . import deps
from .arch import Architecture

VAE_SCALE = 8
TEXT_TOKENS = {"flux1": 512, "flux2": 512, "z-image": 256}
"""Text tokens of the seeded conditioning: FLUX pads T5/Mistral to 512; Z-Image uses the prompt's length."""


@dataclass
class Conditioning:
    """What the model is conditioned on, and where it came from (reports say which)."""

    text: object
    """``[1, tokens, width]``."""
    pooled: object | None
    """``[1, width]`` (FLUX.1's CLIP vector) or None."""
    source: str
    """Human description, e.g. ``seeded embedding (seed 0, 512 tokens)``."""
    load_s: float = 0.0
    """Seconds spent loading the text encoder(s); 0 for the seeded embedding."""
    encode_s: float = 0.0
    """Seconds the text encoder(s) ran."""

    def to(self, device: str, dtype) -> "Conditioning":
        """The same conditioning on ``device`` in the model's compute dtype."""
        pooled = self.pooled.to(device, dtype) if self.pooled is not None else None
        return replace(self, text=self.text.to(device, dtype), pooled=pooled)

    def check(self, arch: Architecture, name: str) -> None:
        """UsageError unless the widths are the ones ``arch`` takes (a text encoder of another model)."""
        from ..errors import UsageError

        hint = "give the text encoder(s) that belong to this model"
        if self.text.shape[-1] != arch.text_width:
            raise UsageError(f"the text encoder gives {self.text.shape[-1]}-wide tokens; {name} takes "
                             f"{arch.text_width}", hint)
        if arch.pooled_width and (self.pooled is None or self.pooled.shape[-1] != arch.pooled_width):
            got = "none" if self.pooled is None else f"{self.pooled.shape[-1]} wide"
            raise UsageError(f"{name} takes a {arch.pooled_width}-wide pooled text vector; the text encoder gives "
                             f"{got}", hint)


def seeded_conditioning(arch: Architecture, seed: int, device: str, dtype) -> Conditioning:
    """A fixed embedding of the right shape from ``seed``: the same on every device and variant."""
    torch = deps.torch()
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = TEXT_TOKENS[arch.family]
    text = torch.randn((1, tokens, arch.text_width), generator=gen).to(device, dtype)
    pooled = torch.randn((1, arch.pooled_width), generator=gen).to(device, dtype) if arch.pooled_width else None
    return Conditioning(text, pooled, f"seeded embedding (seed {seed}, {tokens} tokens; no text encoder)")


def latent_shape(arch: Architecture, width: int, height: int) -> tuple[int, int, int]:
    """The latent the loop works on: FLUX.2 works on patchified latents, the others on the VAE's."""
    h, w = height // VAE_SCALE, width // VAE_SCALE
    if arch.family == "flux2":
        return arch.latent_channels * 4, h // 2, w // 2
    return arch.latent_channels, h, w


def check_resolution(width: int, height: int) -> None:
    from ..errors import UsageError

    if width % 16 or height % 16 or width < 16 or height < 16:
        raise UsageError(f"resolution {width}x{height} must be multiples of 16 (at least 16x16)")


def sigmas(arch: Architecture, steps: int, shape: tuple[int, int, int]) -> list[float]:
    """σ from 1 to 0 in ``steps`` Euler steps: Z-Image Turbo's static shift 3.0; for FLUX the
    resolution-dependent shift of diffusers' FLUX.1 pipeline (``calculate_shift``), used for
    FLUX.2 too. The schedule only has to be the same for every variant being compared."""
    base = [1 - i / steps for i in range(steps + 1)]
    if arch.family == "z-image":
        shift = 3.0
        return [shift * s / (1 + (shift - 1) * s) for s in base]
    tokens = shape[1] * shape[2] if arch.family == "flux2" else (shape[1] // 2) * (shape[2] // 2)
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
    return [0.0 if s == 0 else math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in base]


def _ids(rows: int, cols: int, axes: int, device: str):
    torch = deps.torch()
    grid = torch.zeros(rows, cols, axes)
    grid[..., 1] = torch.arange(rows)[:, None]
    grid[..., 2] = torch.arange(cols)[None, :]
    return grid.reshape(rows * cols, axes).to(device)


class _Flux:
    """Both FLUX generations: tokens, ids and the velocity call."""

    def __init__(self, arch: Architecture, cond: Conditioning, shape: tuple[int, int, int], device: str, dtype):
        torch = deps.torch()
        self.arch, self.cond, self.shape, self.dtype = arch, cond, shape, dtype
        c, h, w = shape
        axes = 4 if arch.family == "flux2" else 3
        rows, cols = (h, w) if arch.family == "flux2" else (h // 2, w // 2)
        self.img_ids = _ids(rows, cols, axes, device)
        tokens = cond.text.shape[1]
        self.txt_ids = torch.zeros(tokens, axes, device=device)
        if axes == 4:
            self.txt_ids[:, 3] = torch.arange(tokens, device=device)
        scale = 4.0 if arch.family == "flux2" else 3.5
        self.guidance = torch.full((1,), scale, device=device) if arch.guidance else None

    def pack(self, x):
        c, h, w = self.shape
        if self.arch.family == "flux2":
            return x.reshape(1, c, h * w).transpose(1, 2)
        return x.view(1, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, (h // 2) * (w // 2), c * 4)

    def unpack(self, tokens):
        c, h, w = self.shape
        if self.arch.family == "flux2":
            return tokens.transpose(1, 2).reshape(1, c, h, w)
        return tokens.view(1, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, c, h, w)

    def velocity(self, model, x, sigma: float):
        torch = deps.torch()
        t = torch.full((1,), sigma, device=x.device, dtype=self.dtype)
        kwargs = dict(hidden_states=self.pack(x).to(self.dtype), encoder_hidden_states=self.cond.text, timestep=t,
                      img_ids=self.img_ids, txt_ids=self.txt_ids, guidance=self.guidance, return_dict=False)
        if self.arch.family == "flux1":
            kwargs["pooled_projections"] = self.cond.pooled
        return self.unpack(model(**kwargs)[0].float())


class _ZImage:
    def __init__(self, arch: Architecture, cond: Conditioning, shape, device: str, dtype):
        self.cond, self.dtype = cond, dtype

    def velocity(self, model, x, sigma: float):
        torch = deps.torch()
        t = torch.full((1,), 1.0 - sigma, device=x.device, dtype=self.dtype)
        out = model([x[0].unsqueeze(1).to(self.dtype)], t, [self.cond.text[0]], return_dict=False)[0]
        return -out[0].squeeze(1).unsqueeze(0).float()


def runner_for(arch: Architecture, cond: Conditioning, shape: tuple[int, int, int], device: str, dtype):
    """The family's model call: ``runner.velocity(model, x, sigma)`` → dx/dσ in latent space."""
    return (_ZImage if arch.family == "z-image" else _Flux)(arch, cond, shape, device, dtype)


@dataclass
class SampleResult:
    """The loop's outcome."""

    latent: object
    """Final latent, float32 on the CPU (model space, see :func:`latent_shape`)."""
    step_ms: list[float] = field(default_factory=list)
    """Milliseconds per timed step (device events on a GPU)."""
    warmup_s: float = 0.0
    """The untimed warm-up forward (compilation, calibration)."""
    finite: bool = True
    """Every element of the final latent is finite."""

    @property
    def it_s(self) -> float:
        total = sum(self.step_ms)
        return len(self.step_ms) / (total / 1000) if total > 0 else 0.0


def sample(model, arch: Architecture, cond: Conditioning, *, width: int, height: int, steps: int, seed: int,
           device: str, dtype) -> SampleResult:
    """Run ``steps`` Euler steps from seeded noise; time each after one warm-up forward."""
    from .quant.fp8 import calibrate, release

    torch = deps.torch()
    shape = latent_shape(arch, width, height)
    runner = runner_for(arch, cond, shape, device, dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *shape), generator=gen).to(device)
    schedule = sigmas(arch, steps, shape)
    cuda = device.startswith("cuda")
    result = SampleResult(latent=None)
    with torch.inference_mode():
        started = time.perf_counter()
        with calibrate(model):
            runner.velocity(model, x, schedule[0])
        if cuda:
            torch.cuda.synchronize(device)
        result.warmup_s = time.perf_counter() - started
        for sigma, nxt in zip(schedule, schedule[1:]):
            x, ms = _timed_step(runner, model, x, sigma, nxt, cuda)
            result.step_ms.append(ms)
        if cuda:
            torch.cuda.synchronize(device)
            result.step_ms = [float(m()) if callable(m) else m for m in result.step_ms]
        release()
    result.latent = x.float().cpu()
    result.finite = bool(torch.isfinite(result.latent).all())
    return result


def _timed_step(runner, model, x, sigma: float, nxt: float, cuda: bool):
    torch = deps.torch()
    if not cuda:
        started = time.perf_counter()
        x = x + (nxt - sigma) * runner.velocity(model, x, sigma)
        return x, (time.perf_counter() - started) * 1000
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    x = x + (nxt - sigma) * runner.velocity(model, x, sigma)
    end.record()
    return x, lambda: begin.elapsed_time(end)
