"""``modelmgr quantize IN OUT --to fp8-scaled|nvfp4|q8_0``: ComfyUI-loadable quantized files.

Layouts (formats.md §3, §2.5), each one the registry's inspector then classifies as such:

* ``fp8-scaled`` — ComfyUI's legacy format: a ``scaled_fp8`` marker (F8_E4M3, shape [0]),
  per quantized layer ``weight`` F8_E4M3 and ``scale_weight`` F32 scalar (``amax / 448``);
* ``nvfp4`` — ComfyUI mixed precision: per layer ``comfy_quant`` (U8 JSON ``{"format": "nvfp4"}``),
  ``weight`` U8 packed FP4 (even element in the high nibble), ``weight_scale`` F8_E4M3 swizzled
  block scales ``[roundup(out,128), roundup(in/16,4)]``, ``weight_scale_2`` F32 scalar;
* ``q8_0`` — GGUF with ``general.architecture`` (``flux`` or ``lumina2``), ``general.file_type``
  7, Q8_0 for 2-D weights of more than 1024 parameters, F32 otherwise (ComfyUI-GGUF's policy,
  including its high-precision exceptions: FLUX.2's shared modulations, Z-Image's pad tokens).

For FP8 and NVFP4 the first and last layers, the embedders, norms and biases stay in BF16 as in
ComfyUI's own files. The input must be a full-precision (BF16/FP16/FP32) diffusion-model file:
re-quantizing a quantized file would compound its error. Tensors stream one at a time (read,
quantize on ``--device``, write), with the next one read while the current one is processed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadFileError, UsageError
from ..registry.inspect import Inspection, inspect_file
from . import deps
from .reader import ModelFile, iter_tensors, open_model
from .writers import GGUFWriter, SafetensorsWriter, Spec

TARGETS = ("fp8-scaled", "nvfp4", "q8_0")
EXPECTED_PRECISION = {"fp8-scaled": "fp8-scaled", "nvfp4": "nvfp4", "q8_0": "gguf-q8_0"}
GGUF_ARCH = {"flux1": "flux", "flux2": "flux", "z-image": "lumina2", "lumina2": "lumina2"}
FULL_PRECISION = ("bf16", "fp16", "fp32")
EDGE_LAYERS = ("img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.", "x_embedder.",
               "cap_embedder.", "t_embedder.")
"""Kept in BF16 by FP8/NVFP4 (the first and last layers and the embedders, as ComfyUI's files do)."""
GGUF_HIGH_PRECISION = ("double_stream_modulation_", "single_stream_modulation.", "x_pad_token", "cap_pad_token")
Q8_MIN_PARAMS = 1024
PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class QuantizeReport:
    output: Path
    to: str
    quantized: int
    """Layers quantized."""
    kept: int
    """Tensors kept in higher precision."""
    seconds: float
    bytes_in: int
    bytes_out: int
    inspection: Inspection
    """The inspector's verdict on the written file."""


def _is_weight(name: str, shape: tuple[int, ...]) -> bool:
    return name.endswith(".weight") and len(shape) == 2


def quantized_dtype(to: str, name: str, shape: tuple[int, ...]) -> str | None:
    """The target storage of one tensor, or None when it stays as it is (module docstring)."""
    if not _is_weight(name, shape):
        if to == "q8_0":
            return "F32"
        return None
    if to == "q8_0":
        rows, cols = shape
        if rows * cols > Q8_MIN_PARAMS and cols % 32 == 0 and not name.startswith(GGUF_HIGH_PRECISION):
            return "Q8_0"
        return "F32"
    if name.startswith(EDGE_LAYERS):
        return None
    return "F8_E4M3" if to == "fp8-scaled" else "U8"


@dataclass(frozen=True)
class _Group:
    """The output tensors made from one source tensor."""

    source: str
    """Source tensor name ('' for the scaled_fp8 marker)."""
    kind: str
    """``keep`` (stored dtype, F32 → BF16), ``f32``, ``q8_0``, ``fp8``, ``nvfp4`` or ``marker``."""
    specs: tuple[Spec, ...]


_KIND = {None: "keep", "F32": "f32", "Q8_0": "q8_0", "F8_E4M3": "fp8", "U8": "nvfp4"}


def _plan(model: ModelFile, to: str) -> list[_Group]:
    """Every output tensor, grouped by source, in output order."""
    from .quant.nvfp4 import roundup

    out: list[_Group] = []
    for entry in model.header.tensors:
        name = entry.name[len(PREFIX):] if entry.name.startswith(PREFIX) else entry.name
        shape = tuple(entry.shape)
        kind = _KIND[quantized_dtype(to, name, shape)]
        if kind == "keep":
            specs: tuple[Spec, ...] = (Spec(name, "BF16" if entry.dtype == "F32" else entry.dtype, shape),)
        elif kind in ("f32", "q8_0"):
            specs = (Spec(name, kind.upper(), shape),)
        elif kind == "fp8":
            specs = (Spec(name, "F8_E4M3", shape), Spec(name[: -len("weight")] + "scale_weight", "F32", ()))
        else:
            layer = name[: -len(".weight")]
            rows, cols = roundup(shape[0], 16), roundup(shape[1], 16)
            specs = (Spec(f"{layer}.comfy_quant", "U8", (len(NVFP4_CONF),)), Spec(name, "U8", (rows, cols // 2)),
                     Spec(f"{layer}.weight_scale", "F8_E4M3", (roundup(rows, 128), roundup(cols // 16, 4))),
                     Spec(f"{layer}.weight_scale_2", "F32", ()))
        out.append(_Group(entry.name, kind, specs))
    if to == "fp8-scaled":
        out.append(_Group("", "marker", (Spec("scaled_fp8", "F8_E4M3", (0,)),)))
    return out


NVFP4_CONF = json.dumps({"format": "nvfp4"}).encode("utf-8")


def _check_input(model: ModelFile, to: str) -> str:
    ins = model.inspection
    if to not in TARGETS:
        raise UsageError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if ins.role != "diffusion_model":
        raise UsageError(f"{model.name}: the inspector sees a {ins.role}; quantize takes a diffusion-model file")
    arch = GGUF_ARCH.get(ins.family or "")
    if arch is None:
        raise UsageError(f"{model.name}: family {ins.family or 'unknown'}; quantize supports FLUX.1, FLUX.2 and Z-Image")
    if ins.precision not in FULL_PRECISION:
        raise UsageError(f"{model.name} is already {ins.precision}; quantize from the BF16/FP16 original",
                         "re-quantizing a quantized file compounds its error")
    return arch


def quantize_file(src: Path, dst: Path, to: str, *, device: str | None = None, force: bool = False,
                  progress=None) -> QuantizeReport:
    """Write ``dst`` from ``src`` in the ``to`` layout (module docstring)."""
    from .gpu_info import resolve_device

    torch = deps.torch("quantize")
    started = time.perf_counter()
    model = open_model(src)
    arch = _check_input(model, to)
    dst = Path(dst)
    if dst.resolve() == Path(src).resolve():
        raise UsageError("the output would overwrite the input")
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists", "pass --force to replace it")
    want_gguf = to == "q8_0"
    if want_gguf != (dst.suffix.lower() == ".gguf"):
        raise UsageError(f"{dst.name}: a {to} file should be named *{'.gguf' if want_gguf else '.safetensors'}")
    dev = resolve_device(device)
    plan = _plan(model, to)
    specs = [spec for group in plan for spec in group.specs]
    if want_gguf:
        kv = {"general.architecture": arch, "general.name": Path(src).stem, "general.quantization_version": 2,
              "general.file_type": 7}
        writer = GGUFWriter(dst, specs, kv)
    else:
        writer = SafetensorsWriter(dst, specs, {"modelmgr.quantized": to, "modelmgr.source": Path(src).name})
    groups = {group.source: group for group in plan}
    quantized = 0
    try:
        with ThreadPoolExecutor(1) as pool:
            stream = iter_tensors(model, "cpu")
            pending = pool.submit(next, stream, None)
            while (item := pending.result()) is not None:
                pending = pool.submit(next, stream, None)
                entry, tensor = item
                group = groups[entry.name]
                for spec, value in zip(group.specs, _convert(tensor.to(dev), group.kind)):
                    writer.write(spec.name, value)
                quantized += group.kind in ("q8_0", "fp8", "nvfp4")
                if progress is not None:
                    progress(entry.name)
        if "" in groups:
            writer.write("scaled_fp8", torch.empty(0, dtype=torch.float8_e4m3fn))
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    inspection = inspect_file(dst)
    expected = EXPECTED_PRECISION[to]
    if inspection.precision != expected:
        raise BadFileError(f"{dst.name}: written, but the inspector classifies it as {inspection.precision}, "
                           f"not {expected} (a modelmgr bug)")
    return QuantizeReport(dst, to, quantized, len(model.header.tensors) - quantized, time.perf_counter() - started,
                          Path(src).stat().st_size, dst.stat().st_size, inspection)


def _convert(tensor, kind: str) -> list:
    """The output tensors of one source tensor, in the order of its group's specs."""
    from .quant import fp8, gguf_dequant, nvfp4

    torch = deps.torch()
    if kind == "keep":
        return [tensor.to(torch.bfloat16) if tensor.dtype == torch.float32 else tensor]
    if kind == "f32":
        return [tensor.to(torch.float32)]
    if kind == "q8_0":
        return [gguf_dequant.quantize_q8_0(tensor)]
    if kind == "fp8":
        return list(fp8.quantize_weight(tensor))
    packed, blocked, global_scale = nvfp4.quantize(tensor)
    return [torch.tensor(list(NVFP4_CONF), dtype=torch.uint8), packed, blocked, global_scale]
