"""FP8 (E4M3) weights with a per-tensor scale: ComfyUI's fp8-scaled and ``float8_e4m3fn`` layers.

Stored form: ``weight`` F8_E4M3 ``[out, in]`` and one F32 scale (``scale_weight`` in the legacy
format, ``weight_scale`` in comfy_quant); the real weight is ``weight * scale``.

On GPUs with FP8 tensor cores (cc ≥ 8.9) :class:`Fp8Linear` runs ``torch._scaled_mm``. Its cost
is quantizing the activation: the naive per-call ``amax`` + divide + clamp + cast is four passes
over the activation and measured 0.98× BF16 on an H100. Here the activation scale is *static*:
the warm-up step runs with dynamic scales and records each layer's activation amax
(:func:`calibrate`), after which every call is one multiply-clamp-cast pass (act_kernel.py: a
Triton kernel) feeding the matmul, and sibling layers fed the same tensor (Q, K, V) share one
scale and one pass. ``dynamic`` mode keeps per-call scales (one extra reduction over the
activation). Elsewhere the weight is dequantized to the compute dtype each call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from . import act_kernel
from .base import QuantLinear, QuantWeight, compiled, row_select, rows_count, torch

F8_MAX = 448.0
FP8 = torch.float8_e4m3fn
ACT_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class Fp8Weight(QuantWeight):
    """``data`` F8_E4M3/E5M2 ``[out, in]`` and ``scale`` (F32, one element)."""

    TENSORS: ClassVar[tuple[str, ...]] = ("data", "scale")
    FORMAT: ClassVar[str] = "fp8"
    data: object = None
    scale: object = None

    def rows(self, index) -> "Fp8Weight":
        return Fp8Weight((rows_count(index, self.shape[0]), self.shape[1]), row_select(self.data, index), self.scale)

    def dequantize(self, dtype, fast: bool = False):
        return compiled("fp8_dequant", _dequant, fast)(self.data, self.scale, dtype)


def _dequant(data, scale, dtype):
    return (data.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def quantize_weight(w) -> tuple[object, object]:
    """Per-tensor FP8 E4M3: ``(fp8 weight, F32 scalar scale)`` with ``scale = amax / 448``."""
    w = w.to(torch.float32)
    amax = w.abs().amax()
    scale = torch.where(amax > 0, amax / F8_MAX, torch.ones_like(amax))
    return (w / scale).clamp(-F8_MAX, F8_MAX).to(FP8), scale.reshape(())


def _inverse_scale(amax, dtype):
    """``448 / amax`` rounded to the activation dtype (so both quantizer paths agree on it)."""
    return (F8_MAX / amax.to(torch.float32).clamp(min=1e-12)).to(dtype).to(torch.float32).reshape(1)


def _quantize_dynamic(x):
    """Per-call scale from the activation's amax (one reduction), then the one-pass quantizer."""
    inv = _inverse_scale(torch.linalg.vector_norm(x, ord=float("inf")), x.dtype)
    return act_kernel.quantize(x, inv), (1.0 / inv).reshape(())


class _ActivationCache:
    """The last quantized activation: sibling layers fed the same tensor (Q, K and V; a gated
    MLP's two inputs) quantize it once. Holding a reference to the input keeps its identity
    meaningful (it cannot be freed and its address reused while cached)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple | None = None

    def get(self, x, scale):
        if self.key is not None and self.key[0] is x and self.key[1] is scale:
            return self.value
        return None

    def put(self, x, scale, value) -> None:
        self.key, self.value = (x, scale), value

    def clear(self) -> None:
        self.key = self.value = None


_CACHE = _ActivationCache()
_DYNAMIC = object()
"""Cache key for dynamically scaled activations (the scale follows from the input alone)."""


class Fp8Linear(QuantLinear):
    """An FP8 layer: FP8 matmul with a static (calibrated) or dynamic activation scale, or dequantized."""

    def __init__(self, weight: Fp8Weight, bias, dtype, *, native: bool, act_mode: str = "static") -> None:
        super().__init__(weight, bias, dtype)
        out_f, in_f = weight.shape
        # _scaled_mm needs both matrix dims in multiples of 16 and an E4M3 weight.
        self.native = native and out_f % 16 == 0 and in_f % 16 == 0 and weight.data.dtype == FP8
        self.act_mode = act_mode
        self.calibrator: _Calibrator | None = None
        self.register_buffer("act_amax", torch.zeros((), dtype=torch.float32, device=weight.data.device))
        self.input_scale = None
        self.inv_input_scale = None
        self.scale_b = weight.scale.to(torch.float32).reshape(())

    def forward(self, x):
        if not self.native:
            w = self._qweight.dequantize(self.compute_dtype, fast=x.is_cuda)
            return torch.nn.functional.linear(x.to(self.compute_dtype), w, self.bias)
        shape = x.shape
        if self.calibrator is not None or self.input_scale is None or self.act_mode == "dynamic":
            key = _DYNAMIC
            cached = _CACHE.get(x, key)
            if cached is None:
                cached = _quantize_dynamic(x.reshape(-1, shape[-1]))
                _CACHE.put(x, key, cached)
            xq, scale_a = cached
            if self.calibrator is not None:
                self.calibrator.observe(self, x, scale_a)
        else:
            scale_a = self.input_scale
            xq = _CACHE.get(x, scale_a)
            if xq is None:
                xq = act_kernel.quantize(x.reshape(-1, shape[-1]), self.inv_input_scale)
                _CACHE.put(x, scale_a, xq)
        y = torch._scaled_mm(xq, self.data.t(), scale_a=scale_a, scale_b=self.scale_b, bias=self.bias,
                             out_dtype=self.compute_dtype, use_fast_accum=True)
        return y.reshape(*shape[:-1], self.out_features)


class _Calibrator:
    """Records each layer's activation amax during the warm-up step, and which layers were fed
    the same tensor one after another (siblings), so that they share one static scale — and,
    through the activation cache, one quantization pass."""

    def __init__(self) -> None:
        self.parent: dict[Fp8Linear, Fp8Linear] = {}
        self.last: tuple | None = None

    def _root(self, layer: Fp8Linear) -> Fp8Linear:
        while self.parent.get(layer, layer) is not layer:
            layer = self.parent[layer]
        return layer

    def observe(self, layer: Fp8Linear, x, scale_a) -> None:
        torch.maximum(layer.act_amax, scale_a * F8_MAX, out=layer.act_amax)
        self.parent.setdefault(layer, layer)
        if self.last is not None and self.last[0] is x and self.last[1] is not layer:
            self.parent[self._root(layer)] = self._root(self.last[1])
        self.last = (x, layer)

    def finish(self, layers: list[Fp8Linear]) -> int:
        """Fix shared static scales; returns the number of sibling groups."""
        groups: dict[Fp8Linear, list[Fp8Linear]] = {}
        for layer in layers:
            layer.calibrator = None
            if layer in self.parent:
                groups.setdefault(self._root(layer), []).append(layer)
        for members in groups.values():
            inv = _inverse_scale(torch.stack([m.act_amax for m in members]).amax(), members[0].compute_dtype)
            scale = (1.0 / inv).reshape(())
            for m in members:
                if m.native and m.act_mode == "static":
                    m.input_scale, m.inv_input_scale = scale, inv
        return len(groups)


@contextmanager
def calibrate(model):
    """Run the body (the warm-up step) with dynamic scales, recording activation amax; then fix
    the static scales, shared by siblings (see :class:`_Calibrator`)."""
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    calibrator = _Calibrator()
    for layer in layers:
        layer.calibrator = calibrator
    try:
        yield len(layers)
    finally:
        calibrator.finish(layers)
        _CACHE.clear()


def release() -> None:
    """Drop the cached activation (the sampling loop calls this when it ends)."""
    _CACHE.clear()
