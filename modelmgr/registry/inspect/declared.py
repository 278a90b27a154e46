"""Is a file what its bundle says it is? ``check_declared`` compares an Inspection with a claim.

Declared format vocabulary (what a bundle may write, and the precisions each accepts):

=================  =============================================================================
``safetensors``    any safetensors file (container only)
``gguf``           any GGUF file (container only)
``bf16``           safetensors ``bf16``; likewise ``fp16``, ``fp32``
``fp8``            any fp8 flavour: ``fp8-e4m3fn``, ``fp8-e5m2``, ``fp8-scaled``, ``fp8-mixed``
``fp8-e4m3fn``     plain, unscaled fp8 of that flavour (also ``fp8-e5m2``)
``fp8-scaled``     ``fp8-scaled`` or ``fp8-mixed``: ComfyUI converts the legacy scaled format into
                   ``comfy_quant`` float8 layers on load, so either on disk is the same model
``fp8-mixed``      ``fp8-mixed`` only (``comfy_quant`` layers, mostly float8)
``nvfp4``          ``nvfp4`` (``comfy_quant`` layers, mostly nvfp4)
``mxfp8``          ``mxfp8``
``gguf-<type>``    GGUF whose quantized tensors are mostly ``<type>``: ``gguf-q8_0``, ``gguf-q4_k``,
                   ``gguf-f16`` (any GGML type name, lower case)
=================  =============================================================================

Declared family: a family name from families.py (``flux1``, ``z-image``, ``qwen3`` …), optionally
with a variant after a colon (``flux1:dev``, ``flux2:klein-4b``, ``qwen3:4b``). ``flux1:kontext``
is accepted as ``flux1:dev`` because Kontext's weights have exactly dev's layout.
"""

from __future__ import annotations

import os

from ...errors import UsageError
from .gguf import GGML_TYPE_NAMES
from .model import Inspection
from .problems import bad

_CONTAINERS = frozenset({"safetensors", "gguf"})
_PRECISION_SETS: dict[str, frozenset[str]] = {
    "bf16": frozenset({"bf16"}),
    "fp16": frozenset({"fp16"}),
    "fp32": frozenset({"fp32"}),
    "fp8": frozenset({"fp8-e4m3fn", "fp8-e5m2", "fp8-scaled", "fp8-mixed"}),
    "fp8-e4m3fn": frozenset({"fp8-e4m3fn"}),
    "fp8-e5m2": frozenset({"fp8-e5m2"}),
    "fp8-scaled": frozenset({"fp8-scaled", "fp8-mixed"}),
    "fp8-mixed": frozenset({"fp8-mixed"}),
    "nvfp4": frozenset({"nvfp4"}),
    "mxfp8": frozenset({"mxfp8"}),
}
_VARIANT_ALIASES = {("flux1", "kontext"): "dev"}
DECLARED_FORMATS = tuple(sorted(_CONTAINERS | set(_PRECISION_SETS))) + ("gguf-<type>",)
"""The declared-format vocabulary, for help texts and bundle validation."""


def is_declared_format(declared: str) -> bool:
    """True when ``declared`` is in the vocabulary (bundle validation calls this at the edge)."""
    return declared in _CONTAINERS or declared in _PRECISION_SETS or (
        declared.startswith("gguf-") and declared[5:].upper() in GGML_TYPE_NAMES)


def _describe(ins: Inspection) -> str:
    if ins.format == "pickle":
        return "a pickle checkpoint (unsafe, never loaded)"
    layers = ", ".join(f"{fmt}: {n}" for fmt, n in list(ins.quant_layers.items())[:3])
    return f"{ins.format} {ins.precision}" + (f" ({layers})" if layers else "")


def check_declared(ins: Inspection, declared_format: str, declared_family: str | None = None) -> None:
    """Raise BadFileError naming both sides when the file is not the declared format (and family).

    An unknown declared word is the bundle's mistake, not the file's: that raises UsageError.
    """
    name = os.path.basename(ins.path) if ins.path else "<bytes>"
    if not is_declared_format(declared_format):
        raise UsageError(f"unknown declared format {declared_format!r}",
                         f"use one of: {', '.join(DECLARED_FORMATS)}")
    if declared_format in _CONTAINERS:
        ok = ins.format == declared_format
    elif declared_format.startswith("gguf-"):
        ok = ins.format == "gguf" and ins.precision == declared_format
    else:
        ok = ins.format == "safetensors" and ins.precision in _PRECISION_SETS[declared_format]
    if not ok:
        raise bad(name, f"declared {declared_format}, but the file is {_describe(ins)}",
                  "the bundle entry or the download is wrong; fix the bundle or fetch the right file")
    if declared_family is not None:
        _check_family(ins, declared_family, name)


def _check_family(ins: Inspection, declared: str, name: str) -> None:
    family, _, variant = declared.partition(":")
    variant = _VARIANT_ALIASES.get((family, variant), variant)
    found = ins.family or "no known family"
    if ins.variant:
        found += f":{ins.variant}"
    if ins.family != family or (variant and ins.variant != variant):
        raise bad(name, f"declared family {declared}, but the tensors are {found}",
                  "the bundle entry or the download is wrong; fix the bundle or fetch the right file")
