"""Quantize an activation to FP8 E4M3 in one pass: ``clamp(x · inv_scale, ±448) → e4m3``.

This is the cost FP8 matmuls pay per call, so it must be one read of the BF16 activation and one
write of the FP8 result (3 bytes per element), launched cheaply. On CUDA with Triton available a
small Triton kernel does exactly that, reading the scale from device memory (no host sync, so
static and dynamic scales cost the same launch). Without Triton, three eager ops in the
activation's dtype (multiply, clamp, cast: 11 bytes per element). Callers round the scale to the
activation dtype first (fp8.py) and give the matmul its exact inverse, so both paths quantize
identically and quantization and dequantization stay consistent.
"""

from __future__ import annotations

from .. import deps, triton_kernels

F8_MAX = 448.0
NAME = "fp8_activation"


def _build(triton, tl):
    @triton.jit
    def quantize(x_ptr, out_ptr, inv_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        inv = tl.load(inv_ptr)
        x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32) * inv
        x = tl.minimum(tl.maximum(x, -448.0), 448.0)  # Triton kernels see no Python globals
        tl.store(out_ptr + offsets, x.to(tl.float8e4nv), mask=mask)

    return quantize


def quantize(x, inv_scale):
    """``[M, K]`` activation → ``[M, K]`` float8_e4m3fn; ``inv_scale`` a 1-element float32 device tensor."""
    torch = deps.torch()
    kernel = triton_kernels.kernel(NAME, _build) if x.is_cuda else None
    if kernel is not None:
        x = x.contiguous()
        out = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
        n = x.numel()
        if triton_kernels.launch(NAME, lambda: kernel[(-(-n // 4096),)](x, out, inv_scale, n, BLOCK=4096,
                                                                         num_warps=8)):
            return out
    triton_kernels.used_eager(NAME)
    return torch.mul(x, inv_scale.to(x.dtype)).clamp_(-F8_MAX, F8_MAX).to(torch.float8_e4m3fn)
