"""NVFP4: FP4 (E2M1) values in blocks of 16 with FP8 block scales and one F32 global scale.

ComfyUI / comfy-kitchen on-disk layout (formats.md §3c), per quantized layer:

* ``weight`` U8 ``[roundup(out,16), roundup(in,16)/2]`` — two FP4 codes per byte, the *even*
  element in the *high* nibble;
* ``weight_scale`` F8_E4M3 ``[roundup(out,128), roundup(in/16,4)]`` — block scales in cuBLAS's
  swizzled 128×4-tile layout (:func:`to_blocked` / :func:`from_blocked`);
* ``weight_scale_2`` F32 scalar — the global scale, ``amax / (448 · 6)``;

and ``w = e2m1 · block_scale · global_scale``. Loaded weights keep the block scales *unswizzled*
(``[rows, in/16]``), so output rows can be selected freely; the native path swizzles once at
load. comfy-kitchen's FP4 matmul needs Blackwell (cc ≥ 10.0): everywhere else NVFP4 runs
emulated — dequantized to BF16 per layer, per call — and reports say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .. import deps
from .base import QuantLinear, QuantWeight, compiled, row_select, rows_count, torch

E2M1_MAX = 6.0
F8_MAX = 448.0
BLOCK = 16
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def roundup(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def to_blocked(scales):
    """``[rows, cols]`` block scales → cuBLAS's swizzled layout, shaped ``[roundup(rows,128), roundup(cols,4)]``.

    Tiles of 128 rows × 4 columns, row-major over tiles; inside a tile the scale of (r, c) sits
    at ``(r % 32) * 16 + (r // 32) * 4 + c``. Padding is zeros.
    """
    rows, cols = scales.shape
    rp, cp = roundup(rows, 128), roundup(cols, 4)
    padded = torch.zeros((rp, cp), dtype=scales.dtype, device=scales.device)
    padded[:rows, :cols] = scales
    tiles = padded.view(rp // 128, 128, cp // 4, 4).permute(0, 2, 1, 3)
    return tiles.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(rp, cp).contiguous()


def from_blocked(blocked, rows: int, cols: int):
    """Inverse of :func:`to_blocked`: the ``[rows, cols]`` block scales."""
    rp, cp = roundup(rows, 128), roundup(cols, 4)
    if blocked.numel() != rp * cp:
        raise ValueError(f"swizzled NVFP4 scales hold {blocked.numel()} values, expected {rp}x{cp}")
    tiles = blocked.reshape(rp // 128, cp // 4, 32, 4, 4).transpose(2, 3).reshape(rp // 128, cp // 4, 128, 4)
    return tiles.permute(0, 2, 1, 3).reshape(rp, cp)[:rows, :cols].contiguous()


def unpack(packed):
    """``[rows, n/2]`` bytes → ``[rows, n]`` 4-bit codes (high nibble first)."""
    return torch.stack((packed >> 4, packed & 0x0F), dim=-1).reshape(packed.shape[0], -1)


def pack(codes):
    """``[rows, n]`` 4-bit codes → ``[rows, n/2]`` bytes, even element in the high nibble."""
    pairs = codes.to(torch.uint8).reshape(codes.shape[0], -1, 2)
    return (pairs[..., 0] << 4) | pairs[..., 1]


def encode_e2m1(x):
    """Round to the nearest E2M1 value (ties to even, saturating at ±6) → 4-bit codes."""
    mag = x.abs()
    mids = torch.tensor(_MIDPOINTS, dtype=mag.dtype, device=mag.device)
    odd = torch.arange(len(_MIDPOINTS), device=mag.device) % 2 == 1
    # Between codes i and i+1 a tie goes to the even code: up when i is odd (>=), stay when even (>).
    up = torch.where(odd, mag.unsqueeze(-1) >= mids, mag.unsqueeze(-1) > mids)
    code = up.sum(-1, dtype=torch.uint8)
    return code | ((x < 0).to(torch.uint8) << 3)


def _dequant(packed, scales, global_scale, dtype):
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=packed.device)
    values = lut[unpack(packed).long()]
    rows, cols = values.shape
    blocks = values.view(rows, cols // BLOCK, BLOCK) * (scales.to(torch.float32) * global_scale).unsqueeze(-1)
    return blocks.view(rows, cols).to(dtype)


@dataclass(frozen=True)
class NvFp4Weight(QuantWeight):
    """``packed`` U8 ``[rows, in_pad/2]``, ``scales`` F8_E4M3 ``[rows, in_pad/16]`` (unswizzled),
    ``global_scale`` F32 scalar; ``shape`` is the logical (out, in) with ``in <= in_pad``."""

    TENSORS: ClassVar[tuple[str, ...]] = ("packed", "scales", "global_scale")
    FORMAT: ClassVar[str] = "nvfp4"
    packed: object = None
    scales: object = None
    global_scale: object = None

    @classmethod
    def from_comfy(cls, weight, weight_scale, weight_scale_2) -> "NvFp4Weight":
        """From ComfyUI's tensors: packed U8, swizzled F8_E4M3 (or U8) block scales, F32 global."""
        rows, half = weight.shape
        scales = from_blocked(weight_scale.view(torch.float8_e4m3fn), rows, half * 2 // BLOCK)
        return cls((rows, half * 2), weight, scales, weight_scale_2.to(torch.float32).reshape(()))

    def rows(self, index) -> "NvFp4Weight":
        return NvFp4Weight((rows_count(index, self.shape[0]), self.shape[1]), row_select(self.packed, index),
                           row_select(self.scales, index), self.global_scale)

    def trimmed(self, in_features: int) -> "NvFp4Weight":
        """The same weight with the logical input width of the layer it feeds (padding dropped on use)."""
        return NvFp4Weight((self.shape[0], in_features), self.packed, self.scales, self.global_scale)

    def dequantize(self, dtype, fast: bool = False):
        full = compiled("nvfp4_dequant", _dequant, fast)(self.packed, self.scales, self.global_scale, dtype)
        return full[:, : self.shape[1]]


def quantize(w) -> tuple[object, object, object]:
    """comfy-kitchen's recipe: ``(packed U8, swizzled F8_E4M3 block scales, F32 global scale)``.

    Both dims are padded to 16 with zeros; ``global = amax / (448·6)``; each block's scale is
    ``amax(block) / 6 / global`` rounded to E4M3; values are ``w / (block · global)`` rounded to
    E2M1. Blocks that are all zero get scale 0 and code 0.
    """
    w = w.to(torch.float32)
    rows, cols = w.shape
    rp, cp = roundup(rows, BLOCK), roundup(cols, BLOCK)
    if (rp, cp) != (rows, cols):
        w = torch.nn.functional.pad(w, (0, cp - cols, 0, rp - rows))
    amax = w.abs().amax()
    global_scale = torch.where(amax > 0, amax / (F8_MAX * E2M1_MAX), torch.ones_like(amax))
    blocks = w.view(rp, cp // BLOCK, BLOCK)
    block_scale = (blocks.abs().amax(-1) / E2M1_MAX / global_scale).clamp(max=F8_MAX).to(torch.float8_e4m3fn)
    total = block_scale.to(torch.float32) * global_scale
    safe = torch.where(total == 0, torch.ones_like(total), total)
    scaled = torch.where(total.unsqueeze(-1) == 0, torch.zeros_like(blocks), blocks / safe.unsqueeze(-1))
    codes = encode_e2m1(scaled.clamp(-E2M1_MAX, E2M1_MAX).view(rp, cp))
    return pack(codes), to_blocked(block_scale), global_scale.reshape(())


def _comfy_kitchen():
    return deps.optional("comfy_kitchen")


class NvFp4Linear(QuantLinear):
    """NVFP4 through comfy-kitchen's FP4 matmul (Blackwell), else emulated (dequantize, BF16 matmul).

    The native path quantizes the activation with comfy-kitchen (dynamic per-tensor global scale,
    as ComfyUI does without a calibrated ``input_scale``) and needs K a multiple of 32 and the
    weight's rows padded to 16 and scales re-swizzled, which happens once here.
    """

    def __init__(self, weight: NvFp4Weight, bias, dtype, *, native: bool) -> None:
        super().__init__(weight, bias, dtype)
        in_pad = weight.packed.shape[1] * 2
        self.native = bool(native and _comfy_kitchen() is not None and in_pad % 32 == 0)
        if self.native:
            rows = roundup(weight.shape[0], BLOCK)
            packed = torch.nn.functional.pad(weight.packed, (0, 0, 0, rows - weight.packed.shape[0]))
            scales = torch.nn.functional.pad(weight.scales.view(torch.uint8), (0, 0, 0, rows - weight.scales.shape[0]))
            self.register_buffer("packed_padded", packed.contiguous())
            self.register_buffer("scales_blocked", to_blocked(scales).view(torch.float8_e4m3fn))

    def forward(self, x):
        if not self.native:
            w = self._qweight.dequantize(self.compute_dtype, fast=x.is_cuda)
            return torch.nn.functional.linear(x.to(self.compute_dtype), w, self.bias)
        ck = _comfy_kitchen()
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(self.compute_dtype)
        in_pad = self.packed_padded.shape[1] * 2
        if in_pad != x2.shape[1]:
            x2 = torch.nn.functional.pad(x2, (0, in_pad - x2.shape[1]))
        a_global = (x2.abs().amax().to(torch.float32) / (F8_MAX * E2M1_MAX)).clamp(min=1e-12)
        qa, a_blocked = ck.quantize_nvfp4(x2, a_global, pad_16x=True)
        y = ck.scaled_mm_nvfp4(qa, self.packed_padded, a_global, self._qweight.global_scale, a_blocked,
                               self.scales_blocked, bias=self.bias, out_dtype=self.compute_dtype)
        return y[: x2.shape[0], : self.out_features].reshape(*shape[:-1], self.out_features)
