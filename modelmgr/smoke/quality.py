"""How close a variant's output is to the BF16 run: PSNR and cosine similarity.

Computed on the final latent (what the quantization changed, free of VAE effects) and on the
picture (what users see). Latent PSNR uses the reference latent's value range as the peak;
image PSNR uses 255. Identical outputs give ``inf`` dB and cosine 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import deps


@dataclass(frozen=True)
class Quality:
    latent_psnr: float
    latent_cos: float
    image_psnr: float | None
    image_cos: float | None

    def to_dict(self) -> dict:
        return {k: (None if v is None else (v if math.isfinite(v) else "inf"))
                for k, v in self.__dict__.items()}


def psnr(test, ref, peak: float | None = None) -> float:
    torch = deps.torch()
    a, b = test.double().flatten(), ref.double().flatten()
    mse = float(torch.mean((a - b) ** 2))
    if peak is None:
        peak = float(b.max() - b.min()) or 1.0
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def cosine(test, ref) -> float:
    a, b = test.double().flatten(), ref.double().flatten()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom else (1.0 if float(a.norm()) == float(b.norm()) else 0.0)


def compare(latent, ref_latent, image, ref_image) -> Quality:
    """Latent and image quality of one run against the reference run (same seed and settings)."""
    if latent.shape != ref_latent.shape:
        raise ValueError(f"latents differ in shape {tuple(latent.shape)} vs {tuple(ref_latent.shape)}")
    same_image = image is not None and ref_image is not None and image.shape == ref_image.shape
    return Quality(psnr(latent, ref_latent), cosine(latent, ref_latent),
                   psnr(image, ref_image, 255.0) if same_image else None,
                   cosine(image, ref_image) if same_image else None)
