"""The torch GGUF dequantizers against gguf-py's numpy reference, bit for bit, and Q8_0
quantization against gguf-py's (itself bit-exact to ggml's C reference)."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from modelmgr.smoke.quant import gguf_dequant  # noqa: E402

# Byte offsets of the f16 scales inside each block: random bytes there could be NaN/inf.
F16_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q2_K": (80, 82),
              "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(qtype: str, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    _, _, size = gguf_dequant.DEQUANTIZERS[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows * blocks_per_row, size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        scales = (rng.standard_normal(raw.shape[0]) * 0.01).astype(np.float16)
        raw[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("qtype", sorted(gguf_dequant.DEQUANTIZERS))
def test_dequantize_matches_gguf_py(qtype):
    _, block, _ = gguf_dequant.DEQUANTIZERS[qtype]
    raw = random_blocks(qtype, rows=6, blocks_per_row=2, seed=len(qtype))
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]).astype(np.float32)
    got = gguf_dequant.dequantize_rows(torch.from_numpy(raw), qtype).numpy()
    assert got.shape == (6, 2 * block) == want.shape
    np.testing.assert_array_equal(got, want)


def test_quantize_q8_0_is_bit_exact_with_gguf_py():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 256)) * 0.05).astype(np.float32)
    w[0, :32] = 0  # an all-zero block: scale 0, no division by zero
    want = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    got = gguf_dequant.quantize_q8_0(torch.from_numpy(w)).numpy()
    np.testing.assert_array_equal(got, want)
    back = gguf_dequant.dequantize_rows(torch.from_numpy(got), "Q8_0")
    assert float((back - torch.from_numpy(w)).norm() / torch.from_numpy(w).norm()) < 0.01


def test_gguf_weight_rows_are_byte_slices():
    raw = torch.from_numpy(random_blocks("Q6_K", rows=8, blocks_per_row=1, seed=1))
    weight = gguf_dequant.GGUFWeight((8, 256), raw, "Q6_K")
    full = weight.dequantize(torch.float32)
    assert torch.equal(weight.rows(slice(2, 5)).dequantize(torch.float32), full[2:5])
    assert torch.equal(weight.rows(torch.tensor([7, 0])).dequantize(torch.float32), full[[7, 0]])
    assert weight.format == "gguf-q6_k" and weight.rows(slice(2, 5)).shape == (3, 256)
