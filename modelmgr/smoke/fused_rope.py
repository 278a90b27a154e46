"""Rotary position embeddings as one kernel: the largest non-matmul cost of a FLUX step.

diffusers' ``apply_rotary_emb`` (FLUX.1, Kontext, FLUX.2) builds the rotated copy with ``stack``,
casts both copies to float32, multiplies, adds and casts back: seven kernels and ~1.5 GB of
memory traffic per call for a 1536² image's queries. FLUX.1 calls it 114 times a step (queries
and keys of 57 blocks); profiled on an H100 (benchmarks/profile_step.py) these copies and
elementwise kernels were ~25% of the step, in the BF16 and the FP8 run alike. One Triton pass reads
``x`` once and writes the result once, with the same float32 arithmetic:
``out[2j] = x[2j]·cos[2j] − x[2j+1]·sin[2j]``, ``out[2j+1] = x[2j+1]·cos[2j+1] + x[2j]·sin[2j+1]``.
Z-Image's RoPE (pairs as complex numbers times complex64 frequencies) is the same product, so the
same kernel runs it with cos/sin tables read off the frequencies once per forward.

The attention processors stay diffusers' own code where they can: :func:`fuse_rope` gives each
FLUX processor a copy of its ``__call__`` whose global ``apply_rotary_emb`` is
:func:`apply_rotary_emb` here (diffusers' module itself is not modified). Z-Image's processor
nests its RoPE inside ``__call__``, so that one is restated (:func:`_zimage_processor_class`).
Every case the kernel does not cover (a CPU, no Triton, the half-split form, odd shapes, a batch
of several images for Z-Image) runs diffusers' arithmetic.
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


def _fused(x, cos, sin, sequence_dim: int):
    """The kernel's result for ``x`` ``[B, S, H, D]`` (``sequence_dim`` 1) or ``[B, H, S, D]`` (2)
    with float32 ``cos``/``sin`` tables ``[S, D]``; None when the kernel does not cover the case."""
    if not (x.is_cuda and x.dim() == 4 and sequence_dim in (1, 2)):
        return None
    seq, width = x.shape[sequence_dim], x.shape[-1]
    half = width // 2
    if (x.dtype not in (torch.bfloat16, torch.float16) or x.numel() == 0 or width < 2 or width % 2
            or half & (half - 1)
            or cos.dtype != torch.float32 or sin.dtype != torch.float32
            or tuple(cos.shape) != (seq, width) or tuple(sin.shape) != (seq, width)):
        return None
    kernel = triton_kernels.kernel(NAME, _build)
    if kernel is None:
        return None
    x = x.contiguous()
    cos, sin = cos.to(x.device).contiguous(), sin.to(x.device).contiguous()
    out = torch.empty_like(x)
    rows = x.numel() // width
    inner = x.shape[2] if sequence_dim == 1 else 1
    per = max(1, 4096 // width)
    grid = (-(-rows // per),)
    ran = triton_kernels.launch(NAME, lambda: kernel[grid](x, cos, sin, out, rows, seq, inner, HALF=half, ROWS=per,
                                                           num_warps=4))
    return out if ran else None


def apply_rotary_emb(x, freqs_cis, use_real: bool = True, use_real_unbind_dim: int = -1, sequence_dim: int = 2):
    """diffusers' ``apply_rotary_emb`` (same signature); the interleaved real form on CUDA runs fused."""
    if use_real and use_real_unbind_dim == -1:
        out = _fused(x, *freqs_cis, sequence_dim)
        if out is not None:
            return out
    triton_kernels.used_eager(NAME)
    return _original()(x, freqs_cis, use_real=use_real, use_real_unbind_dim=use_real_unbind_dim,
                       sequence_dim=sequence_dim)


class _Tables:
    """cos/sin tables ``[S, D]`` of the last complex ``freqs_cis`` seen: Z-Image passes one tensor
    to every block of a forward, so the tables are built once per forward, not per call. Holding
    the tensor keeps its identity meaningful (it cannot be freed and its address reused)."""

    def __init__(self) -> None:
        self.key = None
        self.value = None

    def of(self, freqs_cis):
        if self.key is not freqs_cis:
            pairs = torch.view_as_real(freqs_cis[0])  # [S, D/2, (cos, sin)]
            self.key = freqs_cis
            self.value = tuple(pairs[..., i].repeat_interleave(2, dim=-1).contiguous() for i in (0, 1))
        return self.value


_TABLES = _Tables()


def rotate_complex(x, freqs_cis):
    """Z-Image's RoPE (``x`` ``[B, S, H, D]`` as D/2 complex pairs times ``freqs_cis`` ``[B, S, D/2]``
    complex64), fused on CUDA for one image; otherwise diffusers' own float32 complex product."""
    if x.is_cuda and freqs_cis.dtype == torch.complex64 and freqs_cis.dim() == 3 and freqs_cis.shape[0] == 1 \
            and x.dim() == 4 and x.shape[0] == 1:
        out = _fused(x, *_TABLES.of(freqs_cis), 1)
        if out is not None:
            return out
    triton_kernels.used_eager(NAME)
    with torch.amp.autocast("cuda", enabled=False):
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * freqs_cis.unsqueeze(2)).flatten(3).type_as(x)


def _zimage_processor_class() -> type:
    """diffusers' Z-Image attention processor with :func:`rotate_complex` for its RoPE. Its RoPE is
    a function nested in ``__call__``, so ``__call__`` is restated here, step for step (the CPU
    test checks it gives bit-identical results)."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    class FusedRopeZSingleStreamAttnProcessor(ZSingleStreamAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
            query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
            key = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
            value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if freqs_cis is not None:
                query, key = rotate_complex(query, freqs_cis), rotate_complex(key, freqs_cis)
            dtype = query.dtype
            if attention_mask is not None and attention_mask.ndim == 2:
                attention_mask = attention_mask[:, None, None, :]
            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                  is_causal=False, backend=self._attention_backend,
                                                  parallel_config=self._parallel_config)
            output = attn.to_out[0](hidden_states.flatten(2, 3).to(dtype))
            return attn.to_out[1](output) if len(attn.to_out) > 1 else output

    return FusedRopeZSingleStreamAttnProcessor


def _fused_class(cls: type) -> type | None:
    """``cls`` with a ``__call__`` whose ``apply_rotary_emb`` is ours (Z-Image's: the restated
    processor); None when ``cls`` uses neither diffusers' function nor is Z-Image's."""
    if cls not in _FUSED_CLASSES:
        namespace = vars(sys.modules[cls.__module__])
        call = getattr(cls, "__call__", None)
        fused = None
        if cls.__name__ == "ZSingleStreamAttnProcessor" and cls.__module__.endswith("transformer_z_image"):
            fused = _zimage_processor_class()
        elif namespace.get("apply_rotary_emb") is _original() and isinstance(call, types.FunctionType):
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
