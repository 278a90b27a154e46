"""diffusers' ``RMSNorm`` as one kernel: the largest non-matmul cost of a Z-Image step.

diffusers' ``RMSNorm`` runs six eager kernels per call (cast to float32, square, mean, multiply
by the rsqrt, cast back, multiply by the weight): about 1.4 GB of memory traffic for a
9472 × 3840 activation. Z-Image calls it about 200 times a step (four norms per block plus the
query/key norms); profiled on an H100 at 1536² (benchmarks/profile_step.py) that was ~100 ms of a
380 ms step, in the BF16 and the FP8 run alike, hiding most of what FP8 matmuls save. One Triton
pass reads the input once and writes the output once, with diffusers' exact arithmetic: float32
statistics, the normalized value rounded to the weight's dtype, then multiplied by the weight.
ComfyUI, where users run these files, uses a fused RMSNorm too, so the fused runtime is also the
closer estimate of the speed they will see.

FLUX's models use ``torch.nn.RMSNorm`` (already one op) and are left as they are. On a CPU, without
Triton, or for a norm this kernel does not cover (a bias, float32 weights), the original module runs.
"""

from __future__ import annotations

from . import deps, triton_kernels

torch = deps.torch("the smoke test")
NAME = "rms_norm"
MAX_WIDTH = 16384
"""Widest row the one-block kernel takes (Z-Image: 3840; FLUX.2: 6144); wider rows stay eager."""


def _build(triton, tl):
    @triton.jit
    def rms_norm(x_ptr, w_ptr, out_ptr, rows, cols, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        r = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
        c = tl.arange(0, BLOCK)[None, :]
        mask = (r < rows) & (c < cols)
        x = tl.load(x_ptr + r * cols + c, mask=mask, other=0.0).to(tl.float32)
        inv = tl.rsqrt(tl.sum(x * x, axis=1) / cols + eps)
        y = (x * inv[:, None]).to(out_ptr.dtype.element_ty).to(tl.float32)
        w = tl.load(w_ptr + c, mask=c < cols, other=0.0).to(tl.float32)
        tl.store(out_ptr + r * cols + c, (y * w).to(out_ptr.dtype.element_ty), mask=mask)

    return rms_norm


class FusedRMSNorm(torch.nn.Module):
    """Drop-in for one diffusers ``RMSNorm`` with a half-precision weight and no bias."""

    def __init__(self, original) -> None:
        super().__init__()
        self.original = original
        self.eps = float(original.eps)

    def forward(self, x):
        weight = self.original.weight
        cols = x.shape[-1]
        kernel = triton_kernels.kernel(NAME, _build) if x.is_cuda else None
        if kernel is None or x.dtype != weight.dtype or x.numel() == 0:
            triton_kernels.used_eager(NAME)
            return self.original(x)
        flat = x.reshape(-1, cols).contiguous()
        out = torch.empty_like(flat)
        block = 1 << (cols - 1).bit_length()
        rows_per = max(1, 4096 // block)
        grid = (-(-flat.shape[0] // rows_per),)
        ran = triton_kernels.launch(NAME, lambda: kernel[grid](flat, weight, out, flat.shape[0], cols, self.eps,
                                                               ROWS=rows_per, BLOCK=block,
                                                               num_warps=8 if block >= 2048 else 4))
        return out.view(x.shape) if ran else self.original(x)


def fuse_rms_norms(module) -> int:
    """Replace every diffusers ``RMSNorm`` the kernel covers by :class:`FusedRMSNorm`; returns the count."""
    from diffusers.models.normalization import RMSNorm

    swaps = []
    for name, child in module.named_modules():
        if (isinstance(child, RMSNorm) and child.weight is not None and child.bias is None
                and child.weight.dtype in (torch.bfloat16, torch.float16) and len(child.dim) == 1
                and child.dim[0] <= MAX_WIDTH):
            swaps.append(name)
    for name in swaps:
        parent, _, leaf = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, leaf, FusedRMSNorm(getattr(owner, leaf)))
    return len(swaps)
