"""The value objects of inspection: what a parser found, and what the inspector reports.

A parser turns header bytes into a :class:`ParsedHeader` (structure only, already validated);
classification and family detection turn that into an :class:`Inspection`, the one object the
registry stores and the front ends show. Both are plain data, so the parsers stay pure and the
report stays JSON-serialisable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor as its header describes it; nothing here comes from the tensor's data."""

    name: str
    """The tensor's key exactly as stored (prefixes such as ``model.diffusion_model.`` kept)."""
    dtype: str
    """safetensors dtype string (``BF16``, ``F8_E4M3``, ``U8`` …) or GGML type name (``Q8_0``)."""
    shape: tuple[int, ...]
    """Shape in torch order (GGUF ``ne`` reversed, or ComfyUI-GGUF's ``orig_shape`` override)."""
    start: int
    """Absolute file offset of the tensor's first byte."""
    nbytes: int
    """Size of the tensor's data in bytes."""
    numel: int
    """Elements as stored: prod(shape) for safetensors, ``n_elements`` for GGUF."""


@dataclass(frozen=True)
class ParsedHeader:
    """A structurally valid header: the parser's whole output."""

    format: str
    """``safetensors`` or ``gguf``."""
    header_size: int
    """Bytes before the tensor data: ``8 + N`` for safetensors, the aligned data offset for GGUF."""
    tensors: tuple[TensorEntry, ...]
    """Every tensor: safetensors in data order (sorted by offset), GGUF in header order."""
    kv: dict[str, Any]
    """safetensors ``__metadata__`` (str → str), or GGUF's scalar key/values (arrays left out)."""
    warnings: tuple[str, ...] = ()
    """Structural oddities that do not make the file unreadable."""


@dataclass(frozen=True)
class Inspection:
    """What a model file is, learnt from its header alone. JSON-ready through :meth:`to_dict`."""

    path: str | None
    """The inspected path, or None when bytes were inspected directly."""
    format: str
    """Container format: ``safetensors``, ``gguf`` or ``pickle``."""
    file_size: int
    """File size in bytes."""
    header_size: int
    """Bytes of header before the tensor data (0 for pickle files, which are never parsed)."""
    tensor_count: int
    """Number of tensors the header lists."""
    param_count: int
    """Logical parameters: packed NVFP4 bytes count as 2, GGUF counts ``n_elements``;
    quantization side tensors (scales, ``comfy_quant``, the ``scaled_fp8`` marker) are left out
    so that variants of one model report the same number."""
    dtype_bytes: dict[str, int]
    """Bytes of tensor data per dtype (safetensors dtype strings, GGML type names for GGUF)."""
    precision: str
    """Precision class: ``bf16``, ``fp16``, ``fp32``, ``fp8-e4m3fn``, ``fp8-e5m2``, ``fp8-scaled``,
    ``fp8-mixed``, ``nvfp4``, ``mxfp8``, ``int8-mixed``, ``mixed-<format>``, ``bnb-nf4``,
    ``gguf-<type>`` (e.g. ``gguf-q8_0``) or ``unknown`` (see classify.py)."""
    quant_layers: dict[str, int]
    """Layers per quantization format (ComfyUI ``comfy_quant`` formats such as ``nvfp4``,
    ``float8_e4m3fn``); for GGUF, ≥2-D weight tensors per GGML type. Empty for plain files."""
    family: str | None
    """Model family (``flux1``, ``flux2``, ``z-image``, ``qwen3``, ``flux1-vae`` … see families.py)."""
    variant: str | None
    """Variant within the family where the weights tell it (``dev``, ``schnell``, ``klein-4b``, ``4b``)."""
    role: str
    """``diffusion_model``, ``text_encoder``, ``vae``, ``checkpoint``, ``lora`` or ``unknown``."""
    unsafe: bool
    """True for pickle checkpoints: loading them can run arbitrary code, so they are never opened."""
    warnings: tuple[str, ...]
    """One-line notes: dtypes ComfyUI cannot load, format/metadata disagreements, odd layouts."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Selected metadata: safetensors ``__metadata__`` (keys and values cut to sane sizes) or GGUF
    ``general.*`` scalars, as strings."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out
