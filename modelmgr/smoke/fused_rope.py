"""FLUX's rotary position embedding as one kernel: the largest non-matmul cost of a FLUX step.

diffusers' ``apply_rotary_emb`` (FLUX.1, Kontext, FLUX.2) builds the rotated copy with ``stack``,
casts both copies to float32, multiplies, adds and casts back: seven kernels and ~1.5 GB of
memory traffic per call for a 1536² image's queries. FLUX.1 calls it 114 times a step (queries
and keys of 57 blocks); profiled on an H100 (benchmarks/profile_step.py) these copies and
elementwise kernels were ~25% of the step, in the BF16 and the FP8 run alike. One Triton pass reads
``x`` once and writes the result once, with the same float32 arithmetic:
``out[2j] = x[2j]·cos[2j] − x[2j+1]·sin[2j]``, ``out[2j+1] = x[2j+1]·cos[2j+1] + x[2j]·sin[2j+1]``.

The attention processors stay diffusers' own code: :func:`fuse_rope` gives each one a copy of its
``__call__`` whose global ``apply_rotary_emb`` is :func:`apply_rotary_emb` here (diffusers' module
itself is not modified). That function hands every case the kernel does not cover (a CPU, no
Triton, the complex or half-split forms, odd shapes) to diffusers' original.
"""

from __future__ import annotations

import sys
import types

from . import deps, triton_kernels

torch = deps.torch("the smoke test")
NAME = "rope"
_FUSED_CLASSES: dict[type, type] = {}


def _build(triton, tl):
    @triton.jit
    def rope(x_ptr, cos_ptr, sin_ptr, out_ptr, rows, seq, inner, HALF: tl.constexpr, ROWS: tl.constexpr):
        # Whole rows are loaded contiguously (vectorized); the pairs are split in registers.
        r = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
        c = tl.arange(0, 2 * HALF)[None, :]
        mask = r < rows
        offsets = r * (2 * HALF) + c
        table = ((r // inner) % seq) * (2 * HALF) + c
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        cos = tl.load(cos_ptr + table, mask=mask, other=0.0)
        sin = tl.load(sin_ptr + table, mask=mask, other=0.0)
        even, odd = tl.split(tl.reshape(x, (ROWS, HALF, 2)))
        rotated = tl.reshape(tl.join(-odd, even), (ROWS, 2 * HALF))
        tl.store(out_ptr + offsets, (x * cos + rotated * sin).to(out_ptr.dtype.element_ty), mask=mask)

    return rope


def _original():
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb


def apply_rotary_emb(x, freqs_cis, use_real: bool = True, use_real_unbind_dim: int = -1, sequence_dim: int = 2):
    """diffusers' ``apply_rotary_emb`` (same signature); the interleaved real form on CUDA runs fused."""
    kernel = None
    if use_real and use_real_unbind_dim == -1 and sequence_dim in (1, 2) and x.is_cuda and x.dim() == 4:
        kernel = triton_kernels.kernel(NAME, _build)
    if kernel is not None:
        cos, sin = freqs_cis
        seq, width = x.shape[sequence_dim], x.shape[-1]
        half = width // 2
        if (x.dtype in (torch.bfloat16, torch.float16) and width % 2 == 0 and half & (half - 1) == 0
                and cos.dtype == sin.dtype == torch.float32 and tuple(cos.shape) == tuple(sin.shape) == (seq, width)):
            x = x.contiguous()
            cos, sin = cos.to(x.device).contiguous(), sin.to(x.device).contiguous()
            out = torch.empty_like(x)
            rows = x.numel() // width
            inner = x.shape[2] if sequence_dim == 1 else 1
            per = max(1, 4096 // width)
            grid = (-(-rows // per),)
            if triton_kernels.launch(NAME, lambda: kernel[grid](x, cos, sin, out, rows, seq, inner, HALF=half,
                                                                ROWS=per, num_warps=4)):
                return out
    triton_kernels.used_eager(NAME)
    return _original()(x, freqs_cis, use_real=use_real, use_real_unbind_dim=use_real_unbind_dim,
                       sequence_dim=sequence_dim)


def _fused_class(cls: type) -> type | None:
    """``cls`` with a ``__call__`` whose ``apply_rotary_emb`` is ours; None when ``cls`` does not use
    diffusers' function (its own RoPE, e.g. Z-Image's processor)."""
    if cls not in _FUSED_CLASSES:
        namespace = vars(sys.modules[cls.__module__])
        call = getattr(cls, "__call__", None)
        fused = None
        if namespace.get("apply_rotary_emb") is _original() and isinstance(call, types.FunctionType):
            rebound = types.FunctionType(call.__code__, {**namespace, "apply_rotary_emb": apply_rotary_emb},
                                         call.__name__, call.__defaults__, call.__closure__)
            rebound.__kwdefaults__ = call.__kwdefaults__
            fused = type(f"FusedRope{cls.__name__}", (cls,), {"__call__": rebound, "__module__": __name__})
        _FUSED_CLASSES[cls] = fused
    return _FUSED_CLASSES[cls]


def fuse_rope(module) -> int:
    """Give every attention processor that calls diffusers' ``apply_rotary_emb`` the fused one;
    returns how many were changed."""
    count = 0
    for child in module.modules():
        processor = getattr(child, "processor", None)
        if processor is None or isinstance(processor, torch.nn.Module):
            continue
        fused = _fused_class(type(processor))
        if fused is None:
            continue
        replacement = fused.__new__(fused)
        replacement.__dict__.update(vars(processor))
        child.processor = replacement
        count += 1
    return count
