"""Precision class, quantized-layer counts, parameter count and bytes per dtype of a parsed header.

Precision vocabulary (``Inspection.precision``):

==================  ==========================================================================
``bf16`` ``fp16``   most weight parameters are BF16 / F16 / F32 / F64 (no quantization markers)
``fp32`` ``fp64``
``fp8-e4m3fn``      plain fp8: F8_E4M3 (or F8_E5M2) weights with no scales
``fp8-e5m2``
``fp8-scaled``      ComfyUI's legacy format: a ``scaled_fp8`` marker + per-layer ``scale_weight``
``fp8-mixed``       ComfyUI mixed precision (``comfy_quant``) with mostly float8 layers
``nvfp4``           … with mostly ``nvfp4`` layers (U8 packed weights + fp8 block scales)
``mxfp8``           … with mostly ``mxfp8`` layers
``int8-mixed``      … with mostly ``int8_tensorwise`` layers
``mixed-<format>``  … with mostly another ComfyUI format (``convrot_w4a4``, ``awq_w4a16``, …)
``bnb-nf4``         bitsandbytes NF4 / FP4 (``quant_state.bitsandbytes__*`` keys)
``bnb-fp4``
``gguf-<type>``     GGUF, by the parameter-weighted majority of quantized tensors (``gguf-q8_0``,
                    ``gguf-q4_k``); all-float GGUFs give ``gguf-f16`` / ``gguf-bf16`` / ``gguf-f32``
``unknown``         nothing above fits (e.g. U8 weights with no quantization metadata)
==================  ==========================================================================

Classification looks at weight tensors (``….weight`` with ≥2 dimensions) weighted by parameter
count, so biases, norms and the odd BF16 embedding of a quantized file do not sway it.

Mixed-precision formats live in two places (formats.md §3b): ``__metadata__._quantization_metadata``
(in the header) or per-layer ``<layer>.comfy_quant`` U8 tensors holding a small JSON object, which
sit in the *data* section. Reading those is the one exception to "header only": a targeted read of
each ``comfy_quant`` tensor, each at most 4 KiB, at most 16,384 of them, through a caller-supplied
range reader. When the bytes are not available (pure header inspection) the format is inferred
from the layer's tensor dtypes instead, and a warning says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .model import ParsedHeader, TensorEntry
from .problems import bad, shown

RangeReader = Callable[[int, int], "bytes | None"]
"""``(absolute offset, length) -> bytes``, or None when those bytes cannot be read."""

MAX_COMFY_QUANT_BYTES = 4096
"""A ``comfy_quant`` tensor is a JSON object like ``{"format": "nvfp4"}``; anything larger is not one."""
MAX_COMFY_QUANT_READS = 16384
"""More layers than any real model has; beyond this the formats are inferred, not read."""

PLAIN_PRECISION = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp64",
                   "F8_E4M3": "fp8-e4m3fn", "F8_E5M2": "fp8-e5m2"}
COMFY_QUANT_FORMATS = frozenset({"float8_e4m3fn", "float8_e5m2", "nvfp4", "mxfp8", "int8_tensorwise",
                                 "convrot_w4a4", "asym_w4a8_int8", "awq_w4a16"})
"""ComfyUI's ``QUANT_ALGOS``: any other format string makes ComfyUI fail with a KeyError."""
_FORMAT_PRECISION = {"nvfp4": "nvfp4", "mxfp8": "mxfp8", "float8_e4m3fn": "fp8-mixed",
                     "float8_e5m2": "fp8-mixed", "int8_tensorwise": "int8-mixed"}
AUX_SUFFIXES = (".comfy_quant", ".weight_scale", ".weight_scale_2", ".input_scale", ".scale_weight",
                ".scale_input", ".pre_quant_scale")
"""Quantization side tensors: not parameters of the model."""
_LAYER_PREFIXES = ("", "model.diffusion_model.")
_GGUF_PLAIN = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})
GGUF_GPU_DEQUANT = frozenset({"F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q6_K", "Q5_K",
                              "Q4_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS"})
"""Types ComfyUI-GGUF uses as is or dequantizes on the GPU; the rest fall back to numpy on the CPU."""

GGUF_FILE_TYPES: dict[int, tuple[str, frozenset[str]]] = {
    ftype: (label, frozenset(types.split()))
    for ftype, label, types in (
        (0, "ALL_F32", "F32"), (1, "MOSTLY_F16", "F16"), (2, "MOSTLY_Q4_0", "Q4_0"),
        (3, "MOSTLY_Q4_1", "Q4_1"), (7, "MOSTLY_Q8_0", "Q8_0"), (8, "MOSTLY_Q5_0", "Q5_0"),
        (9, "MOSTLY_Q5_1", "Q5_1"), (10, "MOSTLY_Q2_K", "Q2_K Q3_K"), (11, "MOSTLY_Q3_K_S", "Q3_K"),
        (12, "MOSTLY_Q3_K_M", "Q3_K Q4_K"), (13, "MOSTLY_Q3_K_L", "Q3_K Q5_K"), (14, "MOSTLY_Q4_K_S", "Q4_K"),
        (15, "MOSTLY_Q4_K_M", "Q4_K Q6_K"), (16, "MOSTLY_Q5_K_S", "Q5_K"), (17, "MOSTLY_Q5_K_M", "Q5_K Q6_K"),
        (18, "MOSTLY_Q6_K", "Q6_K"), (19, "MOSTLY_IQ2_XXS", "IQ2_XXS"), (20, "MOSTLY_IQ2_XS", "IQ2_XS"),
        (21, "MOSTLY_Q2_K_S", "Q2_K"), (22, "MOSTLY_IQ3_XS", "IQ3_S IQ3_XXS"),
        (23, "MOSTLY_IQ3_XXS", "IQ3_XXS"), (24, "MOSTLY_IQ1_S", "IQ1_S"), (25, "MOSTLY_IQ4_NL", "IQ4_NL"),
        (26, "MOSTLY_IQ3_S", "IQ3_S"), (27, "MOSTLY_IQ3_M", "IQ3_S"), (28, "MOSTLY_IQ2_S", "IQ2_S IQ2_XS"),
        (29, "MOSTLY_IQ2_M", "IQ2_S"), (30, "MOSTLY_IQ4_XS", "IQ4_XS"), (31, "MOSTLY_IQ1_M", "IQ1_M"),
        (32, "MOSTLY_BF16", "BF16"), (36, "MOSTLY_TQ1_0", "TQ1_0"), (37, "MOSTLY_TQ2_0", "TQ2_0"),
        (38, "MOSTLY_MXFP4_MOE", "MXFP4"), (39, "MOSTLY_NVFP4", "NVFP4"), (40, "MOSTLY_Q1_0", "Q1_0"),
    )
}
"""``general.file_type`` (llama.cpp ``LlamaFileType``) → (label, types a majority may have)."""
_FILE_TYPE_GUESSED = 1024


@dataclass(frozen=True)
class _Layout:
    """The tensors ComfyUI reads for one quantized layer (``ops._load_quantized_module``)."""

    weight_dtypes: frozenset[str]
    required: tuple[str, ...]
    """Companions ComfyUI cannot load the layer without (BadFileError when missing)."""
    expected: tuple[str, ...]
    """Companions normally present (a warning when missing)."""
    scale_dtypes: frozenset[str]
    block: int = 0
    """Block size of the block scales along the input dimension (0: per-tensor scale)."""
    packing: int = 1
    """Logical elements per stored element of the weight (NVFP4 packs two per byte)."""


_LAYOUTS: dict[str, _Layout] = {
    "float8_e4m3fn": _Layout(frozenset({"F8_E4M3"}), (), ("weight_scale",), frozenset({"F32"})),
    "float8_e5m2": _Layout(frozenset({"F8_E5M2"}), (), ("weight_scale",), frozenset({"F32"})),
    "nvfp4": _Layout(frozenset({"U8"}), ("weight_scale", "weight_scale_2"), (),
                     frozenset({"F8_E4M3", "U8"}), block=16, packing=2),
    "mxfp8": _Layout(frozenset({"F8_E4M3"}), ("weight_scale",), (), frozenset({"U8", "F8_E8M0"}), block=32),
    "int8_tensorwise": _Layout(frozenset({"I8"}), (), ("weight_scale",), frozenset({"F32", "BF16", "F16"})),
}


@dataclass(frozen=True)
class PrecisionReport:
    """What classification found."""

    precision: str
    """The precision class (module docstring)."""
    quant_layers: dict[str, int]
    """Layers per quantization format (GGUF: weight tensors per GGML type)."""
    param_count: int
    """Logical parameters, side tensors excluded."""
    dtype_bytes: dict[str, int]
    """Data bytes per dtype, largest first."""
    warnings: tuple[str, ...]
    """One line each; repeated per-layer problems are counted, not listed."""


class _Tally:
    """Per-layer problems collected as one line per kind: '<n> layers …(first: 'x')'."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}

    def add(self, problem: str, layer: str) -> None:
        entry = self.seen.setdefault(problem, [0, layer])
        entry[0] += 1

    def lines(self) -> list[str]:
        return [f"{count} layer(s) {problem} (first: {shown(first)})" for problem, (count, first) in self.seen.items()]


def _roundup(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _dtype_bytes(tensors: tuple[TensorEntry, ...]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for t in tensors:
        total[t.dtype] += t.nbytes
    return dict(total.most_common())


def _is_weight(t: TensorEntry) -> bool:
    return len(t.shape) >= 2 and t.name.endswith(".weight")


def _majority(weights: dict[str, int]) -> str:
    return max(weights, key=lambda k: (weights[k], k))


def classify(parsed: ParsedHeader, read_range: RangeReader | None, name: str) -> PrecisionReport:
    """Classify a parsed header; ``read_range`` is used only for ``comfy_quant`` tensors."""
    if parsed.format == "gguf":
        return _classify_gguf(parsed)
    return _classify_safetensors(parsed, read_range, name)


# ---------------------------------------------------------------------------------- safetensors

def _classify_safetensors(parsed: ParsedHeader, read_range: RangeReader | None, name: str) -> PrecisionReport:
    by_name = {t.name: t for t in parsed.tensors}
    warnings: list[str] = []
    layers = _quantized_layers(parsed, by_name, read_range, name, warnings)
    packed = {layer + ".weight": fmt for layer, fmt in layers.items()}
    params = sum(_logical_numel(t, packed.get(t.name)) for t in parsed.tensors if not _is_side_tensor(t.name))

    if layers:
        precision, quant_layers = _mixed_precision(layers, by_name, name, warnings)
    else:
        precision, quant_layers = _legacy_or_plain(parsed, by_name, warnings)
    return PrecisionReport(precision, quant_layers, params, _dtype_bytes(parsed.tensors),
                           tuple(warnings))


def _logical_numel(weight: TensorEntry, fmt: str | None) -> int:
    """Elements a weight stands for: packed formats (NVFP4 in U8) hold several per stored byte."""
    layout = _LAYOUTS.get(fmt) if fmt else None
    return weight.numel * (layout.packing if layout is not None and weight.dtype == "U8" else 1)


def _is_side_tensor(tname: str) -> bool:
    return tname.endswith(AUX_SUFFIXES) or tname == "scaled_fp8" or tname.endswith(".scaled_fp8")


def _format_of(conf: object, where: str, name: str) -> str:
    if not isinstance(conf, dict) or not isinstance(conf.get("format"), str):
        raise bad(name, f"{where} is not a JSON object with a \"format\" string")
    return conf["format"]


def _quantized_layers(parsed: ParsedHeader, by_name: dict[str, TensorEntry], read_range: RangeReader | None,
                      name: str, warnings: list[str]) -> dict[str, str]:
    """Layer (tensor-name prefix) → ComfyUI quant format, from ``comfy_quant`` tensors and metadata."""
    layers: dict[str, str] = {}
    entries = [t for t in parsed.tensors if t.name.endswith(".comfy_quant")]
    if len(entries) > MAX_COMFY_QUANT_READS:
        warnings.append(f"{len(entries)} comfy_quant tensors is more than the {MAX_COMFY_QUANT_READS} read; "
                        "formats inferred from dtypes")
        read_range = None
    inferred = 0
    for t in entries:
        layer = t.name[: -len(".comfy_quant")]
        if t.dtype != "U8" or len(t.shape) != 1 or t.nbytes > MAX_COMFY_QUANT_BYTES:
            raise bad(name, f"{shown(t.name)} is {t.dtype} {list(t.shape)}; a comfy_quant tensor must be "
                            f"a 1-D U8 JSON string of at most {MAX_COMFY_QUANT_BYTES} bytes")
        raw = read_range(t.start, t.nbytes) if read_range is not None else None
        if raw is None:
            layers[layer] = _infer_format(layer, by_name)
            inferred += 1
            continue
        try:
            conf = json.loads(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            conf = None
        layers[layer] = _format_of(conf, shown(t.name), name)
    if inferred:
        warnings.append(f"{inferred} comfy_quant tensor(s) not read; their formats were inferred from dtypes")

    meta = parsed.kv.get("_quantization_metadata")
    if meta is not None:
        _metadata_layers(meta, by_name, layers, name, warnings)
    return layers


def _metadata_layers(meta: str, by_name: dict[str, TensorEntry], layers: dict[str, str], name: str,
                     warnings: list[str]) -> None:
    """Add ``__metadata__._quantization_metadata`` layers; ``comfy_quant`` tensors take precedence."""
    where = "__metadata__._quantization_metadata"
    try:
        conf = json.loads(meta)
    except (ValueError, RecursionError):
        raise bad(name, f"{where} is not valid JSON") from None
    entries = conf.get("layers") if isinstance(conf, dict) else None
    if not isinstance(entries, dict):
        raise bad(name, f"{where} has no \"layers\" object")
    missing = _Tally()
    for lname, lconf in entries.items():
        fmt = _format_of(lconf, f"{where} layer {shown(lname)}", name)
        full = next((p + lname for p in _LAYER_PREFIXES if p + lname + ".weight" in by_name), None)
        if full is None:
            missing.add("named in _quantization_metadata have no weight tensor", lname)
            continue
        layers.setdefault(full, fmt)
    warnings.extend(missing.lines())


def _infer_format(layer: str, by_name: dict[str, TensorEntry]) -> str:
    """A layer's format from its tensors alone, for when its comfy_quant bytes are not at hand."""
    weight = by_name.get(layer + ".weight")
    scale = by_name.get(layer + ".weight_scale")
    dtype = weight.dtype if weight else None
    if dtype == "U8" and layer + ".weight_scale_2" in by_name:
        return "nvfp4"
    if dtype == "F8_E4M3":
        return "mxfp8" if scale is not None and scale.dtype in ("U8", "F8_E8M0") and scale.numel > 1 \
            else "float8_e4m3fn"
    if dtype == "F8_E5M2":
        return "float8_e5m2"
    if dtype == "I8":
        return "int8_tensorwise"
    return "unknown"


def _mixed_precision(layers: dict[str, str], by_name: dict[str, TensorEntry], name: str,
                     warnings: list[str]) -> tuple[str, dict[str, int]]:
    """Check each quantized layer's companions; the majority format by parameters wins."""
    tally = _Tally()
    counts: Counter[str] = Counter()
    weights: Counter[str] = Counter()
    unknown: set[str] = set()
    for layer, fmt in layers.items():
        weight = by_name.get(layer + ".weight")
        if weight is None:
            raise bad(name, f"layer {shown(layer)} is marked {shown(fmt, 40)} but has no weight tensor")
        if fmt not in COMFY_QUANT_FORMATS:
            unknown.add(fmt)
            fmt = "unknown"
        layout = _LAYOUTS.get(fmt)
        if layout is not None:
            _check_layer(layer, fmt, layout, weight, by_name, name, tally)
        counts[fmt] += 1
        weights[fmt] += _logical_numel(weight, fmt)
    if unknown:
        warnings.append(f"unknown quantization format(s) {', '.join(shown(f, 40) for f in sorted(unknown)[:3])}: "
                        "ComfyUI will refuse to load these layers")
    warnings.extend(tally.lines())
    major = _majority(weights)
    precision = _FORMAT_PRECISION.get(major) or ("unknown" if major == "unknown" else f"mixed-{major}")
    return precision, dict(counts.most_common())


def _check_layer(layer: str, fmt: str, layout: _Layout, weight: TensorEntry, by_name: dict[str, TensorEntry],
                 name: str, tally: _Tally) -> None:
    for suffix in layout.required:
        if layer + "." + suffix not in by_name:
            raise bad(name, f"{fmt} layer {shown(layer)} has no {suffix} tensor (ComfyUI refuses to load it)")
    for suffix in layout.expected:
        if layer + "." + suffix not in by_name:
            tally.add(f"marked {fmt} have no {suffix}", layer)
    if weight.dtype not in layout.weight_dtypes:
        tally.add(f"marked {fmt} store the weight as {weight.dtype}, not {'/'.join(sorted(layout.weight_dtypes))}",
                  layer)
    scale = by_name.get(layer + ".weight_scale")
    if scale is not None and scale.dtype not in layout.scale_dtypes:
        tally.add(f"marked {fmt} have a {scale.dtype} weight_scale", layer)
    if fmt in ("float8_e4m3fn", "float8_e5m2") and scale is not None and scale.numel != 1:
        tally.add(f"marked {fmt} have a weight_scale that is not a scalar", layer)
    second = by_name.get(layer + ".weight_scale_2")
    if fmt == "nvfp4" and second is not None and (second.dtype != "F32" or second.numel != 1):
        tally.add("marked nvfp4 have a weight_scale_2 that is not an F32 scalar", layer)
    if layout.block and scale is not None and len(weight.shape) == 2:
        out, inner = weight.shape[0], weight.shape[1] * layout.packing
        blocks = -(-inner // layout.block)
        # Swizzled (cuBLAS tiled) and plain scales differ only in padding; accept either.
        allowed = {(_roundup(out, 128), _roundup(blocks, 4)), (out, blocks)}
        if scale.shape not in allowed:
            tally.add(f"marked {fmt} have block scales shaped {list(scale.shape)}, expected "
                      f"{list(min(allowed))}", layer)


def _legacy_or_plain(parsed: ParsedHeader, by_name: dict[str, TensorEntry],
                     warnings: list[str]) -> tuple[str, dict[str, int]]:
    markers = [t for t in parsed.tensors if t.name == "scaled_fp8" or t.name.endswith(".scaled_fp8")]
    scaled = [t.name[: -len(".scale_weight")] for t in parsed.tensors if t.name.endswith(".scale_weight")]
    if markers and scaled:
        marker = markers[0]
        if marker.numel not in (0, 2):
            warnings.append(f"scaled_fp8 marker has {marker.numel} elements (expected 0 or 2)")
        fmt = "float8_e5m2" if marker.dtype == "F8_E5M2" else "float8_e4m3fn"
        expected = "F8_E5M2" if fmt == "float8_e5m2" else "F8_E4M3"
        odd = [layer for layer in scaled if (w := by_name.get(layer + ".weight")) is None or w.dtype != expected]
        if odd:
            warnings.append(f"{len(odd)} layer(s) with scale_weight have no {expected} weight (first: {shown(odd[0])})")
        return "fp8-scaled", {fmt: len(scaled)}
    if markers:
        warnings.append("scaled_fp8 marker without any .scale_weight tensors")
    elif scaled:
        warnings.append(f"{len(scaled)} .scale_weight tensors but no scaled_fp8 marker: "
                        "ComfyUI will ignore the scales")

    weights = [t for t in parsed.tensors if _is_weight(t)] or \
              [t for t in parsed.tensors if not _is_side_tensor(t.name)]
    by_dtype: Counter[str] = Counter()
    for t in weights:
        by_dtype[t.dtype] += t.numel
    if not by_dtype:
        return "unknown", {}
    major = _majority(by_dtype)
    if major in PLAIN_PRECISION:
        return PLAIN_PRECISION[major], {}
    joined = "\n".join(by_name)
    for kind in ("nf4", "fp4"):
        if f"bitsandbytes__{kind}" in joined:
            return f"bnb-{kind}", {}
    warnings.append(f"weights are mostly {major} with no quantization metadata: unknown storage format")
    return "unknown", {}


# ----------------------------------------------------------------------------------------- GGUF

def _classify_gguf(parsed: ParsedHeader) -> PrecisionReport:
    warnings: list[str] = []
    tensors = parsed.tensors
    quantized: Counter[str] = Counter()
    for t in tensors:
        if t.dtype not in _GGUF_PLAIN:
            quantized[t.dtype] += t.numel
    weights = [t for t in tensors if _is_weight(t)] or list(tensors)
    if quantized:
        major = _majority(quantized)
    elif weights:
        plain: Counter[str] = Counter()
        for t in weights:
            plain[t.dtype] += t.numel
        major = _majority(plain)
    else:
        major = None

    slow = sorted(set(quantized) - GGUF_GPU_DEQUANT)
    if slow:
        warnings.append(f"{', '.join(slow)} tensors are dequantized on the CPU by ComfyUI-GGUF (very slow)")
    ftype = parsed.kv.get("general.file_type")
    if ftype is not None and major is not None:
        known = GGUF_FILE_TYPES.get(ftype) if type(ftype) is int else None
        if known is None:
            if ftype != _FILE_TYPE_GUESSED:
                warnings.append(f"general.file_type {shown(ftype)} is not a known llama.cpp file type")
        elif major not in known[1]:
            warnings.append(f"general.file_type {ftype} ({known[0]}) disagrees with the tensors, "
                            f"which are mostly {major}")

    layers: Counter[str] = Counter(t.dtype for t in tensors if _is_weight(t))
    precision = f"gguf-{major.lower()}" if major else "unknown"
    return PrecisionReport(precision, dict(layers.most_common()), sum(t.numel for t in tensors),
                           _dtype_bytes(tensors), tuple(warnings))

