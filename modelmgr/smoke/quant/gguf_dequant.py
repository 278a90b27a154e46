"""GGUF block formats dequantized on the device, in torch (ports of gguf-py's numpy reference).

A GGUF quantized tensor is stored as blocks along each row (``ne[0]``, the input dimension): here
it arrives as ``[rows, row_bytes]`` uint8, so output rows can be selected by slicing bytes and the
whole tensor dequantizes on the GPU, as ComfyUI-GGUF does (about 400 GB/s for Q8_0 on an H100,
DESIGN). Every function below takes ``[n_blocks, type_size]`` uint8 and returns
``[n_blocks, block_size]`` float32, bit for bit what ``gguf.quants.dequantize`` gives (the tests
compare them). :func:`quantize_q8_0` is the quantizer's half, bit-exact to ggml's reference too.

Supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (the types ComfyUI-GGUF
dequantizes on the GPU, minus the IQ4 codebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import QuantWeight, compiled, row_select, rows_count, torch

QK_K = 256


def _f16(blocks, start: int):
    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(torch.float32)


def _nibbles(qs, group: int):
    """Low nibbles of each ``group`` bytes, then their high nibbles (ggml's order)."""
    n = qs.shape[0]
    q = qs.reshape(n, -1, 1, group)
    return torch.cat(((q & 0x0F), (q >> 4)), dim=2).reshape(n, -1)


def _bits(data, count: int):
    """Bit i of a little-endian byte string, for i < count → ``[n, count]`` uint8."""
    shifts = torch.arange(8, device=data.device, dtype=torch.uint8)
    return ((data.unsqueeze(-1) >> shifts) & 1).reshape(data.shape[0], -1)[:, :count]


def q4_0(b):
    d = _f16(b, 0)
    return d * (_nibbles(b[:, 2:], 16).to(torch.float32) - 8)


def q4_1(b):
    d, m = _f16(b, 0), _f16(b, 2)
    return d * _nibbles(b[:, 4:], 16).to(torch.float32) + m


def q5_0(b):
    d = _f16(b, 0)
    q = _nibbles(b[:, 6:], 16) | (_bits(b[:, 2:6], 32) << 4)
    return d * (q.to(torch.float32) - 16)


def q5_1(b):
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 8:], 16) | (_bits(b[:, 4:8], 32) << 4)
    return d * q.to(torch.float32) + m


def q8_0(b):
    return _f16(b, 0) * b[:, 2:].contiguous().view(torch.int8).to(torch.float32)


def q2_k(b):
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b, 80), _f16(b, 82)
    dl = (d * (scales & 0x0F).to(torch.float32)).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).to(torch.float32)).reshape(n, 16, 1)
    shift = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).reshape(1, 1, 4, 1)
    q = ((qs.reshape(n, -1, 1, 32) >> shift) & 3).reshape(n, 16, 16).to(torch.float32)
    return (dl * q - ml).reshape(n, QK_K)


def q3_k(b):
    n = b.shape[0]
    hmask, qs, raw, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b, 108)
    low = (raw[:, :8].reshape(n, 1, 8) >> torch.tensor([0, 4], dtype=torch.uint8, device=b.device).reshape(1, 2, 1))
    high = (raw[:, 8:].reshape(n, 1, 4) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device)
            .reshape(1, 4, 1))
    scales = (low.reshape(n, 16) & 0x0F) | ((high.reshape(n, 16) & 0x03) << 4)
    dl = (d * (scales.to(torch.int8).to(torch.float32) - 32)).reshape(n, 16, 1)
    ql = (qs.reshape(n, -1, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device)
          .reshape(1, 1, 4, 1)).reshape(n, 16, 16) & 3
    qh = ((hmask.reshape(n, -1, 1, 32) >> torch.arange(8, dtype=torch.uint8, device=b.device)
           .reshape(1, 1, 8, 1)).reshape(n, 16, 16) & 1) ^ 1
    q = ql.to(torch.float32) - (qh << 2).to(torch.float32)
    return (dl * q).reshape(n, QK_K)


def _k_scale_min(scales):
    """The 6-bit scales and mins of Q4_K / Q5_K (12 bytes → 8 + 8)."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mn = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return sc.to(torch.float32), mn.to(torch.float32)


def q4_k(b):
    n = b.shape[0]
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scale_min(b[:, 4:16])
    q = _nibbles(b[:, 16:], 32).reshape(n, 8, 32).to(torch.float32)
    return ((d * sc).reshape(n, 8, 1) * q - (dmin * mn).reshape(n, 8, 1)).reshape(n, QK_K)


def q5_k(b):
    n = b.shape[0]
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scale_min(b[:, 4:16])
    qh = b[:, 16:48]
    ql = _nibbles(b[:, 48:], 32).reshape(n, 8, 32)
    high = ((qh.reshape(n, 1, 32) >> torch.arange(8, dtype=torch.uint8, device=b.device).reshape(1, 8, 1)) & 1)
    q = (ql | (high << 4)).to(torch.float32)
    return ((d * sc).reshape(n, 8, 1) * q - (dmin * mn).reshape(n, 8, 1)).reshape(n, QK_K)


def q6_k(b):
    n = b.shape[0]
    ql, qh, scales, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b, 208)
    dl = (d * scales.contiguous().view(torch.int8).to(torch.float32)).reshape(n, 16, 1)
    low = _nibbles(ql, 64).reshape(n, 8, 32)
    high = ((qh.reshape(n, -1, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device)
             .reshape(1, 1, 4, 1)) & 3).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).to(torch.float32)
    return (dl * q).reshape(n, QK_K)


DEQUANTIZERS = {"Q4_0": (q4_0, 32, 18), "Q4_1": (q4_1, 32, 20), "Q5_0": (q5_0, 32, 22), "Q5_1": (q5_1, 32, 24),
                "Q8_0": (q8_0, 32, 34), "Q2_K": (q2_k, 256, 84), "Q3_K": (q3_k, 256, 110),
                "Q4_K": (q4_k, 256, 144), "Q5_K": (q5_k, 256, 176), "Q6_K": (q6_k, 256, 210)}
"""GGML type name → (dequantizer, block size, bytes per block)."""


def dequantize_rows(raw, qtype: str):
    """``[rows, row_bytes]`` uint8 of one GGML type → ``[rows, cols]`` float32."""
    fn, _, size = DEQUANTIZERS[qtype]
    return fn(raw.reshape(-1, size)).reshape(raw.shape[0], -1)


def _dequant(raw, qtype: str, dtype):
    return dequantize_rows(raw, qtype).to(dtype)


@dataclass(frozen=True)
class GGUFWeight(QuantWeight):
    """``raw`` uint8 ``[out, row_bytes]`` of GGML type ``qtype``."""

    TENSORS: ClassVar[tuple[str, ...]] = ("raw",)
    raw: object = None
    qtype: str = "Q8_0"

    @property
    def format(self) -> str:
        return f"gguf-{self.qtype.lower()}"

    def rows(self, index) -> "GGUFWeight":
        return GGUFWeight((rows_count(index, self.shape[0]), self.shape[1]), row_select(self.raw, index), self.qtype)

    def dequantize(self, dtype, fast: bool = False):
        return compiled(f"gguf_{self.qtype}", _dequant, fast)(self.raw, self.qtype, dtype)


def _roundf(x):
    """ggml's round-half-away-from-zero, in gguf-py's exact formulation (bit-exact Q8_0)."""
    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def quantize_q8_0(w):
    """``[rows, cols]`` float → ``[rows, cols/32*34]`` uint8 Q8_0 blocks (cols a multiple of 32)."""
    rows, cols = w.shape
    blocks = w.to(torch.float32).reshape(-1, 32)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    qs = _roundf(blocks * inv).to(torch.int8)
    packed = torch.cat((d.to(torch.float16).view(torch.uint8), qs.view(torch.uint8)), dim=1)
    return packed.reshape(rows, cols // 32 * 34)
