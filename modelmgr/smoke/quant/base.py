"""What every stored weight format shares, and the dequantize-on-the-fly linear layer.

A :class:`QuantWeight` is a linear layer's weight in its stored form: a few device tensors and a
logical ``(out_features, in_features)`` shape. It can select output rows (how fused QKV weights
are split without dequantizing), report its bytes, and dequantize to a float dtype.

:class:`QuantLinear` is the module base: it registers the weight's tensors as buffers (so memory
accounting and ``.to()`` see them), exposes a zero-size ``weight`` of the compute dtype (diffusers
reads ``layer.weight.dtype`` in places), and rebuilds the weight after ``.to()``.
:class:`DequantLinear` is the portable runner: dequantize, then an ordinary matmul — how ComfyUI
runs GGUF everywhere and FP8/NVFP4 where the GPU has no native kernel ("emulated").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .. import deps

torch = deps.torch("the smoke test")
nn = torch.nn
F = torch.nn.functional


@dataclass(frozen=True)
class QuantWeight:
    """Base of the stored formats. Subclasses list their tensor fields in ``TENSORS``."""

    TENSORS: ClassVar[tuple[str, ...]] = ()
    FORMAT: ClassVar[str] = "?"

    shape: tuple[int, int]
    """Logical (out_features, in_features)."""

    @property
    def format(self) -> str:
        """Short name for reports (``fp8``, ``nvfp4``, ``gguf-q8_0``)."""
        return self.FORMAT

    def tensors(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.TENSORS}

    def with_tensors(self, tensors: dict[str, Any]) -> "QuantWeight":
        return replace(self, **tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def rows(self, index) -> "QuantWeight":
        """The weight of output rows ``index`` (a slice or a LongTensor), still quantized."""
        raise NotImplementedError

    def dequantize(self, dtype, fast: bool = False) -> Any:
        """The ``(out, in)`` weight in ``dtype``; ``fast`` uses the compiled kernel (CUDA)."""
        raise NotImplementedError


def row_select(tensor, index):
    """``tensor[index]`` along dim 0: a view for slices, a gather for index tensors."""
    return tensor[index] if isinstance(index, slice) else tensor.index_select(0, index.to(tensor.device))


def rows_count(index, total: int) -> int:
    return len(range(*index.indices(total))) if isinstance(index, slice) else int(index.numel())


class QuantLinear(nn.Module):
    """A linear layer holding a :class:`QuantWeight`; subclasses implement ``forward``."""

    native: bool = False
    """True when the format runs through its own low-precision matmul (reports count these)."""

    def __init__(self, weight: QuantWeight, bias, dtype) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = dtype
        self._qweight = weight
        for name, tensor in weight.tensors().items():
            self.register_buffer(name, tensor)
        self.bias = nn.Parameter(bias.to(dtype), requires_grad=False) if bias is not None else None
        self.register_buffer("dtype_probe", torch.empty(0, dtype=dtype, device=_device_of(weight)),
                             persistent=False)

    @property
    def weight(self):
        """Zero-size stand-in of the compute dtype: diffusers asks ``linear.weight.dtype``."""
        return self.dtype_probe

    @property
    def qweight(self) -> QuantWeight:
        return self._qweight

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        self._qweight = self._qweight.with_tensors({n: getattr(self, n) for n in self._qweight.TENSORS})
        return out

    def extra_repr(self) -> str:
        mode = "native" if self.native else "dequantized"
        return f"in={self.in_features}, out={self.out_features}, {self._qweight.format} ({mode})"


def _device_of(weight: QuantWeight):
    return next(iter(weight.tensors().values())).device


class DequantLinear(QuantLinear):
    """Dequantize to the compute dtype each call, then a normal matmul (ComfyUI's on-the-fly path).

    VRAM holds only the packed weight plus one transient full-precision copy. On CUDA the
    dequantization is compiled (one fused kernel instead of a dozen elementwise ones) when
    torch.compile works; it falls back to eager otherwise.
    """

    def forward(self, x):
        w = self._qweight.dequantize(self.compute_dtype, fast=x.is_cuda)
        return F.linear(x.to(self.compute_dtype), w, self.bias)


_COMPILED: dict[str, Any] = {}
_FAILED: dict[str, str] = {}


def compiled(name: str, fn, enabled: bool):
    """``torch.compile(fn)`` once per process when ``enabled`` (CUDA), else ``fn`` itself.

    ``fn`` takes tensors (and fixed dtypes) only, so one compiled graph with dynamic shapes serves
    every layer instead of recompiling per layer. A compile failure (no Triton, an unsupported op) is remembered and the eager function used:
    compiling is a speed-up here, never a requirement.
    """
    if not enabled:
        return fn
    if name not in _COMPILED:
        try:
            _COMPILED[name] = _Guarded(name, torch.compile(fn, dynamic=True), fn)
        except Exception as err:  # noqa: BLE001 - fall back to eager
            _FAILED[name] = f"{type(err).__name__}: {str(err)[:200]}"
            _COMPILED[name] = fn
    return _COMPILED[name]


class _Guarded:
    """Call the compiled function; on its first failure switch to the eager one for good."""

    def __init__(self, name: str, fast, slow) -> None:
        self.name, self.fast, self.slow, self.failed = name, fast, slow, False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.fast(*args)
            except Exception as err:  # noqa: BLE001 - e.g. Triton missing at first call
                self.failed = True
                _FAILED[self.name] = f"{type(err).__name__}: {str(err)[:200]}"
        return self.slow(*args)


def compile_status() -> dict[str, str]:
    """Which compiled kernels ran (``compiled``) and which fell back to eager (with the reason)."""
    return {name: _FAILED.get(name, "compiled") for name in _COMPILED}

