"""Quantize an activation to FP8 E4M3 in one pass: ``clamp(x · inv_scale, ±448) → e4m3``.

This is the cost FP8 matmuls pay per call, so it must be one read of the BF16 activation and one
write of the FP8 result (3 bytes per element), launched cheaply. On CUDA with Triton available a
small Triton kernel does exactly that, reading the scale from device memory (no host sync, so
static and dynamic scales cost the same launch). Without Triton, three eager ops in the
activation's dtype (multiply, clamp, cast: 11 bytes per element). Callers round the scale to the
activation dtype first (fp8.py) and give the matmul its exact inverse, so both paths quantize
identically and quantization and dequantization stay consistent.

:func:`status` says which path ran (reports include it).
"""

from __future__ import annotations

from .. import deps

F8_MAX = 448.0
_STATE: dict[str, str] = {}


def _triton_kernel():
    """The Triton kernel, built once; None when Triton cannot be imported."""
    if "kernel" in _STATE:
        return _STATE.get("fn")  # type: ignore[return-value]
    _STATE["kernel"] = "tried"
    triton = deps.optional("triton")
    if triton is None:
        _STATE["path"] = "eager (no Triton)"
        return None
    import triton.language as tl

    @triton.jit
    def quantize(x_ptr, out_ptr, inv_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        inv = tl.load(inv_ptr)
        x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32) * inv
        x = tl.minimum(tl.maximum(x, -448.0), 448.0)  # Triton kernels see no Python globals
        tl.store(out_ptr + offsets, x.to(tl.float8e4nv), mask=mask)

    _STATE["fn"] = quantize  # type: ignore[assignment]
    return quantize


def quantize(x, inv_scale):
    """``[M, K]`` activation → ``[M, K]`` float8_e4m3fn; ``inv_scale`` a 1-element float32 device tensor."""
    torch = deps.torch()
    kernel = _triton_kernel() if x.is_cuda else None
    if kernel is not None and _STATE.get("path") != "eager (Triton failed)":
        x = x.contiguous()
        out = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
        n = x.numel()
        try:
            kernel[(-(-n // 4096),)](x, out, inv_scale, n, BLOCK=4096, num_warps=8)
            _STATE["path"] = "triton"
            return out
        except Exception as err:  # noqa: BLE001 - fall back to eager for good, and say why
            _STATE["path"] = "eager (Triton failed)"
            _STATE["error"] = f"{type(err).__name__}: {str(err)[:200]}"
    _STATE.setdefault("path", "eager")
    return torch.mul(x, inv_scale.to(x.dtype)).clamp_(-F8_MAX, F8_MAX).to(torch.float8_e4m3fn)


def status() -> dict[str, str]:
    return {k: v for k, v in _STATE.items() if k in ("path", "error")}
