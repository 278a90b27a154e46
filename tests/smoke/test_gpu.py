"""On a CUDA GPU: native FP8 matmuls, compiled dequantizers and the GPU loader agree with the
portable CPU paths; a whole smoke run works. Skipped without CUDA (marker ``gpu``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_fp8_matmul_matches_dequantized_linear(cuda):
    from modelmgr.smoke.quant.fp8 import Fp8Linear, Fp8Weight, calibrate, quantize_weight

    if not cuda.fp8_native:
        pytest.skip("this GPU has no FP8 matmul")
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(256, 512, generator=gen, device="cuda") / 512 ** 0.5
    data, scale = quantize_weight(w)
    bias = torch.randn(256, device="cuda", generator=gen) * 0.1
    weight = Fp8Weight((256, 512), data, scale)
    for mode in ("static", "dynamic"):
        layer = Fp8Linear(weight, bias, torch.bfloat16, native=True, act_mode=mode)
        assert layer.native
        x = torch.randn(3, 77, 512, generator=gen, device="cuda").to(torch.bfloat16)
        with torch.inference_mode():
            with calibrate(layer):
                layer(x)
            got = layer(x)
        want = torch.nn.functional.linear(x.float(), weight.dequantize(torch.float32), bias)
        assert got.shape == (3, 77, 256) and got.dtype == torch.bfloat16
        assert _rel(got, want) < 0.05, mode


def test_compiled_dequantizers_match_the_cpu(cuda):
    from modelmgr.smoke.quant import gguf_dequant, nvfp4

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(128, 256, generator=gen)
    packed, blocked, g = nvfp4.quantize(w)
    weight = nvfp4.NvFp4Weight.from_comfy(packed, blocked, g)
    on_gpu = nvfp4.NvFp4Weight.from_comfy(packed.cuda(), blocked.cuda(), g.cuda())
    assert torch.equal(on_gpu.dequantize(torch.float32, fast=True).cpu(), weight.dequantize(torch.float32))
    raw = gguf_dequant.quantize_q8_0(w)
    gw = gguf_dequant.GGUFWeight((128, 256), raw.cuda(), "Q8_0")
    assert torch.equal(gw.dequantize(torch.float32, fast=True).cpu(), gguf_dequant.dequantize_rows(raw, "Q8_0"))


def test_gpu_loader_reads_the_same_bytes(cuda, models):
    from modelmgr.smoke.reader import load_all, open_model

    model = open_model(models["z-image"])
    on_gpu, stats = load_all(model, "cuda:0")
    on_cpu, _ = load_all(model, "cpu")
    assert stats.bytes > 0 and set(on_gpu) == set(on_cpu)
    for name, t in on_cpu.items():
        assert torch.equal(on_gpu[name].cpu(), t), name


@pytest.mark.parametrize("fmt", ["bf16", "fp8-scaled", "nvfp4", "q8_0"])
def test_smoke_runs_on_the_gpu(cuda, models, quantized, fmt):
    from modelmgr.smoke.runner import Options, run_variant
    from modelmgr.smoke.targets import Target

    path = models["z-image"] if fmt == "bf16" else quantized[("z-image", fmt)]
    run = run_variant(Target(path.name, path, vae=models["flux1-vae"]), Options(width=128, height=128, steps=3),
                      cuda)
    r = run.result
    assert r.finite and r.it_s > 0 and r.peak_vram_bytes > 0 and r.device["is_gpu"]
    assert r.verdict == "NO-REFERENCE" and run.image.shape == (32, 32, 3)  # the tiny VAE upsamples 2×
    if fmt == "fp8-scaled" and cuda.fp8_native:
        assert "native" in r.layers


def test_fused_rms_norm_matches_diffusers(cuda):
    from diffusers.models.normalization import RMSNorm

    from modelmgr.smoke import triton_kernels
    from modelmgr.smoke.fused_norm import FusedRMSNorm

    gen = torch.Generator(device="cuda").manual_seed(2)
    for width, rows in ((3840, 1000), (128, 4097), (3072, 33)):
        norm = RMSNorm(width, eps=1e-5).to("cuda", torch.bfloat16)
        norm.weight.data = torch.randn(width, generator=gen, device="cuda").to(torch.bfloat16)
        x = (torch.randn(rows, width, generator=gen, device="cuda") * 3).to(torch.bfloat16)
        want = norm(x)
        got = FusedRMSNorm(norm)(x.view(1, rows, width))
        assert got.shape == (1, rows, width) and got.dtype == torch.bfloat16
        assert _rel(got.view(rows, width), want) < 4e-3, width
    assert triton_kernels.status()["rms_norm"]["path"] == "triton"


def test_fused_rope_matches_diffusers(cuda):
    from diffusers.models.embeddings import apply_rotary_emb as original

    from modelmgr.smoke import triton_kernels
    from modelmgr.smoke.fused_rope import apply_rotary_emb

    gen = torch.Generator(device="cuda").manual_seed(3)
    for seq_dim, shape in ((1, (1, 333, 24, 128)), (2, (2, 6, 77, 128)), (1, (1, 50, 4, 64))):
        seq, width = shape[seq_dim], shape[-1]
        x = torch.randn(shape, generator=gen, device="cuda").to(torch.bfloat16)
        angles = torch.rand(seq, width // 2, generator=gen, device="cuda") * 6.3
        cos, sin = (f(angles).repeat_interleave(2, dim=1) for f in (torch.cos, torch.sin))
        want = original(x, (cos, sin), sequence_dim=seq_dim)
        got = apply_rotary_emb(x, (cos, sin), sequence_dim=seq_dim)
        assert got.shape == x.shape and got.dtype == x.dtype
        assert _rel(got, want) < 4e-3, shape
    assert triton_kernels.status()["rope"]["path"] == "triton"


def test_fused_complex_rope_matches_zimage_arithmetic(cuda):
    from modelmgr.smoke.fused_rope import rotate_complex

    gen = torch.Generator(device="cuda").manual_seed(4)
    x = torch.randn(1, 300, 30, 128, generator=gen, device="cuda").to(torch.bfloat16)
    angles = torch.rand(1, 300, 64, generator=gen, device="cuda") * 6.3
    freqs = torch.polar(torch.ones_like(angles), angles)
    want = torch.view_as_real(torch.view_as_complex(x.float().reshape(1, 300, 30, 64, 2)) * freqs.unsqueeze(2))
    got = rotate_complex(x, freqs)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert _rel(got, want.flatten(3).to(torch.bfloat16)) < 4e-3
    assert torch.equal(rotate_complex(x, freqs), got)  # the cached tables give the same
