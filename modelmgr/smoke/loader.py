"""A model file → a diffusers module on the device, every weight in its stored format.

Steps, each checked with a one-line error naming the file:

1. the tensor bytes go to the device once (reader.py), timed: that is the "load GB/s";
2. quantized layers are assembled from their tensors — legacy ``scaled_fp8`` + ``scale_weight``,
   ComfyUI ``comfy_quant`` (``float8_e4m3fn``/``e5m2``, ``nvfp4``), plain FP8, GGUF block types —
   into :mod:`.quant` weights; side tensors are consumed;
3. the architecture is read off the shapes (arch.py) and diffusers' key converter applied (rowmap.py);
4. the model is built on the meta device and filled: quantized weights replace their
   ``nn.Linear`` with a format layer (native matmul where the GPU has one, dequantized otherwise),
   plain tensors are assigned in the compute dtype. Nothing may be left missing or unused;
5. on a GPU, diffusers' multi-kernel RMSNorm and rotary embeddings run as one fused kernel
   each (fused_norm.py, fused_rope.py): the same arithmetic, a fraction of the memory traffic.

Calibrated ``input_scale`` / ``scale_input`` tensors in a file are not used: FP8 layers calibrate
their own activation scales on the warm-up step (quant/fp8.py), the same way for every file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from ..errors import BadFileError
from . import deps
from .arch import Architecture, detect, import_model_code
from .gpu_info import DeviceInfo
from .reader import LoadStats, ModelFile, load_all
from .rowmap import apply_converter

PREFIXES = ("model.diffusion_model.",)
_SIDE = (".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale", ".comfy_quant",
         ".pre_quant_scale")
SUPPORTED_COMFY_FORMATS = ("float8_e4m3fn", "float8_e5m2", "nvfp4")


@dataclass
class LoadedModel:
    """A model ready to run, and how it got there."""

    module: object
    arch: Architecture
    dtype: object
    """Compute dtype (bf16, or fp16 for FP16 files)."""
    seconds: float
    """Wall time from opening the file to a module ready on the device."""
    transfer: LoadStats
    """Bytes read to the device and how fast."""
    layers: dict = field(default_factory=dict)
    """Quantized layers per ``(format, "native"|"emulated")``."""
    device_bytes: int = 0
    """Bytes of parameters and buffers on the device."""

    def formats_line(self) -> str:
        """E.g. ``fp8: 456 native`` or ``nvfp4: 300 emulated (dequantized to BF16)``."""
        if not self.layers:
            return "all layers in the stored float dtype"
        parts = []
        for (fmt, mode), count in sorted(self.layers.items()):
            parts.append(f"{fmt}: {count} {mode}" + (" (dequantized per call)" if mode == "emulated" else ""))
        return ", ".join(parts)


def compute_dtype(model: ModelFile):
    torch = deps.torch()
    return torch.float16 if model.inspection.precision in ("fp16", "gguf-f16") else torch.bfloat16


def load(model: ModelFile, device: DeviceInfo, *, act_mode: str = "static") -> LoadedModel:
    """Load ``model`` onto ``device.device`` in its stored format (module docstring)."""
    torch = deps.torch("the smoke test")
    import_model_code()
    started = time.perf_counter()
    if model.inspection.role not in ("diffusion_model", "checkpoint"):
        raise BadFileError(f"{model.name}: the inspector sees a {model.inspection.role} "
                           f"({model.inspection.family or 'unknown family'}), not a diffusion model")
    raw, transfer = load_all(model, device.device)
    state = _strip_prefix(raw, model.name)
    state = assemble_layers(state, model)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    arch = detect(model.inspection.family, shapes, model.name)
    converted = apply_converter(arch.convert_fn(), state, model.name, arch.layouts)
    dtype = compute_dtype(model)
    module = arch.build()
    layers = _install(module, converted, dtype, device, model.name, act_mode)
    module.eval().requires_grad_(False)
    if device.is_gpu:
        from .fused_norm import fuse_rms_norms
        from .fused_rope import fuse_rope

        fuse_rms_norms(module)
        fuse_rope(module)
    if device.is_gpu:
        torch.cuda.synchronize(device.device)
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return LoadedModel(module, arch, dtype, time.perf_counter() - started, transfer, layers, size)


def _strip_prefix(state: dict, name: str) -> dict:
    for prefix in PREFIXES:
        inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if len(inside) > 5:
            return inside
    return state


def _comfy_formats(state: dict, model: ModelFile) -> dict[str, dict]:
    """Layer → comfy_quant config, from per-layer tensors and from ``_quantization_metadata``."""
    out: dict[str, dict] = {}
    meta = model.header.kv.get("_quantization_metadata")
    if isinstance(meta, str):
        try:
            layers = json.loads(meta).get("layers", {})
        except (ValueError, AttributeError):
            raise BadFileError(f"{model.name}: __metadata__._quantization_metadata is not valid JSON") from None
        for layer, conf in layers.items():
            out[layer] = conf
    for key in [k for k in state if k.endswith(".comfy_quant")]:
        raw = bytes(state[key].cpu().tolist())
        try:
            out[key[: -len(".comfy_quant")]] = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadFileError(f"{model.name}: {key} is not a JSON object") from None
    return out


def assemble_layers(state: dict, model: ModelFile) -> dict:
    """Plain tensors stay; each quantized layer's tensors become one weight object."""
    from .quant.gguf_dequant import DEQUANTIZERS, GGUFWeight
    from .quant.nvfp4 import NvFp4Weight

    torch = deps.torch()
    out: dict = {}
    if model.is_gguf:
        for entry in model.header.tensors:
            key = entry.name[len(PREFIXES[0]):] if entry.name.startswith(PREFIXES[0]) else entry.name
            if key not in state:
                continue
            if entry.dtype in DEQUANTIZERS:
                out[key] = GGUFWeight((state[key].shape[0], entry.shape[-1]), state[key], entry.dtype)
            elif entry.dtype in ("F32", "F16", "BF16"):
                out[key] = state[key]
            else:
                raise BadFileError(f"{model.name}: tensor {entry.name!r} is {entry.dtype}; the smoke test "
                                   f"dequantizes {', '.join(DEQUANTIZERS)} and F32/F16/BF16")
        return out

    comfy = _comfy_formats(state, model)
    legacy = any(k == "scaled_fp8" or k.endswith(".scaled_fp8") for k in state)
    for key, value in state.items():
        if key.endswith(_SIDE) or key == "scaled_fp8" or key.endswith(".scaled_fp8"):
            continue
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        conf = comfy.get(layer) if layer else None
        if conf is not None:
            fmt = conf.get("format") if isinstance(conf, dict) else None
            if fmt not in SUPPORTED_COMFY_FORMATS:
                raise BadFileError(f"{model.name}: layer {layer!r} is {fmt!r}; the smoke test runs "
                                   f"{', '.join(SUPPORTED_COMFY_FORMATS)}")
            if fmt == "nvfp4":
                out[key] = NvFp4Weight.from_comfy(value, _side(state, layer, "weight_scale", model),
                                                  _side(state, layer, "weight_scale_2", model))
            else:
                scale = state.get(f"{layer}.weight_scale", torch.ones((), device=value.device))
                out[key] = _fp8(value, scale, key, model)
        elif layer and legacy and f"{layer}.scale_weight" in state:
            out[key] = _fp8(value, state[f"{layer}.scale_weight"], key, model)
        elif layer and value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) and value.dim() == 2:
            out[key] = _fp8(value, torch.ones((), device=value.device), key, model)
        elif value.dtype.is_floating_point:
            out[key] = value
        else:
            raise BadFileError(f"{model.name}: tensor {key!r} is {str(value.dtype).replace('torch.', '')} "
                               "with no quantization metadata the smoke test knows")
    return out


def _side(state: dict, layer: str, suffix: str, model: ModelFile):
    key = f"{layer}.{suffix}"
    if key not in state:
        raise BadFileError(f"{model.name}: NVFP4 layer {layer!r} has no {suffix}")
    return state[key]


def _fp8(value, scale, key: str, model: ModelFile):
    from .quant.fp8 import Fp8Weight

    torch = deps.torch()
    if value.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2) or value.dim() != 2:
        raise BadFileError(f"{model.name}: {key} is marked FP8 but stored as {value.dtype} {list(value.shape)}")
    if scale.numel() != 1:
        raise BadFileError(f"{model.name}: the scale of {key} has {scale.numel()} values, expected one")
    return Fp8Weight(tuple(value.shape), value, scale.to(torch.float32).reshape(()))


def _install(module, converted: dict, dtype, device: DeviceInfo, name: str, act_mode: str) -> dict:
    """Replace quantized linears, assign plain tensors; every parameter filled, every tensor used."""
    from .quant.base import QuantWeight

    torch = deps.torch()
    layers: Counter = Counter()
    expected = module.state_dict(keep_vars=True)
    replaced: set[str] = set()
    for key, value in converted.items():
        if not isinstance(value, QuantWeight):
            continue
        path = key[: -len(".weight")]
        linear = module.get_submodule(path) if key.endswith(".weight") else None
        if not isinstance(linear, torch.nn.Linear):
            raise BadFileError(f"{name}: {key} is quantized but is not a linear layer's weight")
        bias = converted.get(f"{path}.bias")
        layer = _make_linear(value, linear, bias, dtype, device, name, key, act_mode)
        parent, _, child = path.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, layer)
        layers[(value.format, "native" if layer.native else "emulated")] += 1
        replaced.update({key, f"{path}.bias"})
    plain: dict = {}
    for key, param in expected.items():
        if key in replaced:
            continue
        if key not in converted:
            raise BadFileError(f"{name}: no tensor for {key} (the file is not a complete checkpoint)")
        value = converted[key]
        if tuple(value.shape) != tuple(param.shape):
            if value.numel() != param.numel():
                raise BadFileError(f"{name}: {key} is {list(value.shape)}, the model needs {list(param.shape)}")
            value = value.reshape(param.shape)
        plain[key] = value.to(dtype) if value.dtype.is_floating_point else value
    unused = sorted(set(converted) - set(plain) - replaced)
    if unused:
        raise BadFileError(f"{name}: {len(unused)} tensor(s) the model has no place for (first: {unused[0]!r})",
                           "the file may be of another family or variant than its layout suggests")
    module.load_state_dict(plain, strict=False, assign=True)
    stuck = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if stuck:
        raise BadFileError(f"{name}: {len(stuck)} model tensor(s) not loaded (first: {stuck[0]})")
    return dict(layers)


def _make_linear(weight, linear, bias, dtype, device: DeviceInfo, name: str, key: str, act_mode: str):
    from .quant.base import DequantLinear
    from .quant.fp8 import Fp8Linear, Fp8Weight
    from .quant.nvfp4 import NvFp4Linear, NvFp4Weight

    out_f, in_f = linear.out_features, linear.in_features
    if isinstance(weight, NvFp4Weight):
        if weight.shape[0] > out_f and weight.shape[0] == -(-out_f // 16) * 16:
            weight = weight.rows(slice(0, out_f))  # the rows ComfyUI padded to 16
        if weight.shape[0] != out_f or weight.shape[1] < in_f:
            raise BadFileError(f"{name}: NVFP4 {key} holds {list(weight.shape)}, the layer is [{out_f}, {in_f}]")
        return NvFp4Linear(weight.trimmed(in_f), bias, dtype, native=device.nvfp4_native)
    if tuple(weight.shape) != (out_f, in_f):
        raise BadFileError(f"{name}: {key} is {list(weight.shape)}, the layer is [{out_f}, {in_f}]")
    if isinstance(weight, Fp8Weight):
        return Fp8Linear(weight, bias, dtype, native=device.fp8_native, act_mode=act_mode)
    return DequantLinear(weight, bias, dtype)
