"""NVFP4 as comfy-kitchen lays it out: E2M1 rounding, high-nibble-first packing, the cuBLAS
swizzle of the block scales, and a quantize → dequantize round trip."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from modelmgr.smoke.quant import nvfp4  # noqa: E402


def test_e2m1_rounds_to_nearest_with_ties_to_even():
    x = torch.tensor([0.0, 0.2, 0.25, 0.3, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, -0.75, -6.0])
    values = torch.tensor(nvfp4.E2M1_VALUES)[nvfp4.encode_e2m1(x).long()]
    assert values.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -1.0, -6.0]


def test_packing_puts_the_even_element_in_the_high_nibble():
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    packed = nvfp4.pack(codes)
    assert packed.tolist() == [[0x12, 0xF0]]
    assert torch.equal(nvfp4.unpack(packed), codes)


def test_swizzle_matches_the_cublas_tile_formula_and_round_trips():
    rows, cols = 200, 7
    scales = torch.arange(rows * cols, dtype=torch.int32).reshape(rows, cols)
    blocked = nvfp4.to_blocked(scales)
    assert blocked.shape == (256, 8)
    flat = blocked.reshape(-1)
    for r, c in [(0, 0), (1, 0), (31, 3), (32, 0), (127, 2), (128, 4), (199, 6)]:
        tile = (r // 128) * (8 // 4) + c // 4
        inner = (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
        assert int(flat[tile * 512 + inner]) == int(scales[r, c]), (r, c)
    assert torch.equal(nvfp4.from_blocked(blocked, rows, cols), scales)


def test_quantize_layout_and_round_trip_error():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(100, 72, generator=gen)
    packed, blocked, global_scale = nvfp4.quantize(w)
    assert packed.shape == (112, 40) and packed.dtype == torch.uint8
    assert blocked.shape == (128, 8) and blocked.dtype == torch.float8_e4m3fn
    assert global_scale.shape == () and float(global_scale) == pytest.approx(float(w.abs().max()) / (448 * 6))
    weight = nvfp4.NvFp4Weight.from_comfy(packed, blocked, global_scale).trimmed(72).rows(slice(0, 100))
    back = weight.dequantize(torch.float32)
    assert back.shape == (100, 72)
    assert float((back - w).norm() / w.norm()) < 0.2
    zeros = nvfp4.quantize(torch.zeros(16, 32))
    assert int(zeros[0].sum()) == 0 and not torch.isnan(zeros[2])
