"""Shared fixtures: tiny checkpoints of each family, written once per session.

torch and diffusers are required here (pytest.importorskip): without them every test in this
folder skips, except the ones that check the missing-extra error itself (test_extras.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smoke import tiny


def _require():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("safetensors")


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """BF16 files ``flux1``, ``flux2``, ``z-image`` and the VAEs ``flux1-vae``, ``flux2-vae``."""
    _require()
    folder = tmp_path_factory.mktemp("tiny-models")
    out = {family: tiny.write(folder / f"{family}-bf16.safetensors", make(), seed=i)
           for i, (family, make) in enumerate(tiny.LAYOUTS.items())}
    out["flux1-vae"] = tiny.write(folder / "ae.safetensors", tiny.vae_layout(latent=16), seed=10)
    out["flux2-vae"] = tiny.write(folder / "flux2-vae.safetensors", tiny.vae_layout(latent=32, flux2=True), seed=11)
    return out


@pytest.fixture(scope="session")
def quantized(models, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """``(family, format)`` → a file written by ``quantize`` (fp8-scaled, nvfp4, q8_0)."""
    from modelmgr.smoke.quantize import quantize_file

    folder = tmp_path_factory.mktemp("tiny-quantized")
    out = {}
    for family in tiny.LAYOUTS:
        for fmt, ext in (("fp8-scaled", "safetensors"), ("nvfp4", "safetensors"), ("q8_0", "gguf")):
            out[(family, fmt)] = quantize_file(models[family], folder / f"{family}-{fmt}.{ext}", fmt,
                                               device="cpu").output
    return out


@pytest.fixture()
def cpu():
    from modelmgr.smoke.gpu_info import describe

    return describe("cpu")


@pytest.fixture()
def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from modelmgr.smoke.gpu_info import describe

    return describe("cuda:0")
