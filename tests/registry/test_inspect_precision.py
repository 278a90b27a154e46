"""Precision classes, quantized-layer counts and parameter counts, on every on-disk format."""

from __future__ import annotations

import json
import logging

import pytest

from modelmgr.errors import BadFileError
from modelmgr.registry.inspect import inspect_file, inspect_header_bytes
from tests.fixtures.model_files import (
    T,
    as_dtype,
    comfy_quant,
    comfy_quant_json,
    edge_layers_bf16,
    flux1_layout,
    fp8_scaled,
    safetensors_bytes,
    write_any,
    write_gguf,
)

logging.getLogger("gguf").setLevel(logging.ERROR)

BASE = flux1_layout()
BASE_PARAMS = sum(t.numel for t in BASE.values())


def _mixed(fmt, **kw):
    return comfy_quant(BASE, edge_layers_bf16(fmt), **kw)


SAFETENSORS_VARIANTS = {
    "bf16": ((BASE, None), "bf16", {}),
    "fp16": ((as_dtype(BASE, "F16"), None), "fp16", {}),
    "fp32": ((as_dtype(BASE, "F32"), None), "fp32", {}),
    "fp8-e4m3fn": ((as_dtype(BASE, "BF16", "F8_E4M3"), None), "fp8-e4m3fn", {}),
    "fp8-e5m2": ((as_dtype(BASE, "BF16", "F8_E5M2"), None), "fp8-e5m2", {}),
    "fp8-scaled": ((fp8_scaled(BASE), None), "fp8-scaled", {"float8_e4m3fn": 23}),
    "fp8-mixed": (_mixed("float8_e4m3fn"), "fp8-mixed", {"float8_e4m3fn": 19}),
    "nvfp4 (comfy_quant)": (_mixed("nvfp4"), "nvfp4", {"nvfp4": 19}),
    "nvfp4 (metadata)": (_mixed("nvfp4", in_metadata=True), "nvfp4", {"nvfp4": 19}),
    "mxfp8": (_mixed("mxfp8"), "mxfp8", {"mxfp8": 19}),
    "int8": (_mixed("int8_tensorwise"), "int8-mixed", {"int8_tensorwise": 19}),
}


@pytest.mark.parametrize("variant", list(SAFETENSORS_VARIANTS))
def test_safetensors_precision(tmp_path, variant):
    (layout, metadata), precision, layers = SAFETENSORS_VARIANTS[variant]
    ins = inspect_file(write_any(tmp_path / "m.safetensors", layout, metadata))
    assert (ins.precision, ins.quant_layers) == (precision, layers)
    assert ins.param_count == BASE_PARAMS, "variants of one model report the same parameter count"
    assert ins.warnings == ()
    assert (ins.family, ins.variant) == ("flux1", "dev")


def test_mixed_formats_count_each_and_the_majority_by_parameters_wins():
    def pick(name):
        if "single_blocks" in name:
            return "nvfp4"  # the big linear1/linear2 layers
        return None if "final_layer" in name or "_in." in name else "float8_e4m3fn"

    layout, _ = comfy_quant(BASE, pick)
    data = safetensors_bytes(layout)
    ins = inspect_header_bytes(data, len(data))
    assert ins.quant_layers == {"float8_e4m3fn": 10, "nvfp4": 3}
    assert ins.precision == "fp8-mixed"
    heavy, _ = comfy_quant(flux1_layout(single=8), lambda n: "nvfp4" if "single" in n else
                           ("float8_e4m3fn" if "double" in n else None))
    data = safetensors_bytes(heavy)
    assert inspect_header_bytes(data, len(data)).precision == "nvfp4"


def test_comfy_quant_is_inferred_when_only_the_header_is_given():
    layout, _ = _mixed("nvfp4")
    full = safetensors_bytes(layout)
    header_only = full[: 8 + int.from_bytes(full[:8], "little")]
    ins = inspect_header_bytes(header_only, len(full))
    assert ins.precision == "nvfp4" and ins.quant_layers == {"nvfp4": 19}
    assert any("inferred from dtypes" in w for w in ins.warnings)


def test_nvfp4_without_its_scales_is_refused(tmp_path):
    layout, _ = _mixed("nvfp4")
    del layout["double_blocks.0.img_attn.qkv.weight_scale_2"]
    with pytest.raises(BadFileError, match="nvfp4 layer 'double_blocks.0.img_attn.qkv' has no weight_scale_2"):
        inspect_file(write_any(tmp_path / "m.safetensors", layout))


def test_nvfp4_scale_shapes_are_checked_leniently():
    layout, _ = _mixed("nvfp4")
    w = layout["double_blocks.0.img_attn.qkv.weight"]
    layout["double_blocks.0.img_attn.qkv.weight_scale"] = T("F8_E4M3", (w.shape[0], w.shape[1] * 2 // 16))
    data = safetensors_bytes(layout)
    assert inspect_header_bytes(data, len(data)).warnings == ()  # unswizzled: accepted
    layout["double_blocks.0.img_attn.qkv.weight_scale"] = T("F8_E4M3", (7, 3))
    data = safetensors_bytes(layout)
    ins = inspect_header_bytes(data, len(data))
    assert ins.precision == "nvfp4"
    assert any("block scales shaped [7, 3]" in w for w in ins.warnings)


def test_bad_comfy_quant_contents_are_errors():
    layout, _ = _mixed("float8_e4m3fn")
    layout["img_in.comfy_quant"] = T("U8", (9,), b"not json!")
    data = safetensors_bytes(layout)
    with pytest.raises(BadFileError, match="img_in.comfy_quant' is not a JSON object"):
        inspect_header_bytes(data, len(data))
    layout["img_in.comfy_quant"] = T("F32", (1,))
    data = safetensors_bytes(layout)
    with pytest.raises(BadFileError, match="must be a 1-D U8 JSON string"):
        inspect_header_bytes(data, len(data))


def test_unknown_quant_format_warns():
    layout, _ = _mixed("float8_e4m3fn")
    layout["img_in.comfy_quant"] = comfy_quant_json({"format": "fp3_magic"})
    data = safetensors_bytes(layout)
    ins = inspect_header_bytes(data, len(data))
    assert ins.quant_layers["unknown"] == 1 and ins.precision == "fp8-mixed"
    assert any("'fp3_magic'" in w and "refuse" in w for w in ins.warnings)


def test_quantization_metadata_errors():
    for meta, expected in (("{", "not valid JSON"), ('{"layers": 3}', "no \"layers\" object"),
                           ('{"layers": {"img_in": {}}}', "is not a JSON object with a \"format\"")):
        data = safetensors_bytes(BASE, {"_quantization_metadata": meta})
        with pytest.raises(BadFileError, match=expected):
            inspect_header_bytes(data, len(data))
    data = safetensors_bytes(BASE, {"_quantization_metadata": json.dumps({"layers": {"nope": {"format": "nvfp4"}}})})
    ins = inspect_header_bytes(data, len(data))
    assert any("no weight tensor" in w for w in ins.warnings)


def test_legacy_scaled_fp8_edge_cases():
    no_marker = {k: v for k, v in fp8_scaled(BASE).items() if k != "scaled_fp8"}
    data = safetensors_bytes(no_marker)
    ins = inspect_header_bytes(data, len(data))
    assert ins.precision == "fp8-e4m3fn" and any("ComfyUI will ignore the scales" in w for w in ins.warnings)
    prefixed = fp8_scaled({"model.diffusion_model." + k: v for k, v in BASE.items()},
                          marker_prefix="model.diffusion_model.", flavour="F8_E5M2")
    data = safetensors_bytes(prefixed)
    ins = inspect_header_bytes(data, len(data))
    assert (ins.precision, ins.quant_layers) == ("fp8-scaled", {"float8_e5m2": 23})


def test_u8_weights_without_metadata_are_unknown_and_bnb_is_named():
    packed = {k: T("U8", v.shape) if len(v.shape) == 2 else v for k, v in BASE.items()}
    data = safetensors_bytes(packed)
    ins = inspect_header_bytes(data, len(data))
    assert ins.precision == "unknown" and any("mostly U8" in w for w in ins.warnings)
    packed["img_in.weight.quant_state.bitsandbytes__nf4"] = T("U8", (8,))
    data = safetensors_bytes(packed)
    assert inspect_header_bytes(data, len(data)).precision == "bnb-nf4"


@pytest.mark.parametrize(("qtype", "file_type", "warned"), [
    ("Q8_0", 7, False), ("Q4_K", 15, False), ("F16", 1, False), ("BF16", 32, False), ("Q8_0", 1, True),
    ("Q5_0", 8, False), ("Q3_K", 12, False)])
def test_gguf_precision_and_file_type_cross_check(tmp_path, qtype, file_type, warned):
    path = write_gguf(tmp_path / "m.gguf", flux1_layout(hidden=256), "flux", qtype, file_type=file_type)
    ins = inspect_file(path)
    assert ins.precision == f"gguf-{qtype.lower()}"
    assert ins.quant_layers.get(qtype, 0) >= 19
    assert any("disagrees with the tensors" in w for w in ins.warnings) == warned


def test_gguf_slow_types_are_flagged(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", flux1_layout(hidden=256), "flux", "IQ2_XS")
    ins = inspect_file(path)
    assert ins.precision == "gguf-iq2_xs"
    assert any("IQ2_XS tensors are dequantized on the CPU" in w for w in ins.warnings)
