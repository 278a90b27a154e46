"""``quantize`` writes ComfyUI's layouts: the inspector classifies each output as it should, the
side tensors have the exact dtypes and shapes ComfyUI reads, edge layers stay BF16, and the
weights come back within each format's error bounds."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
safetensors = pytest.importorskip("safetensors")

from modelmgr.errors import UsageError  # noqa: E402
from modelmgr.registry.inspect import inspect_file  # noqa: E402
from modelmgr.smoke.quant.gguf_dequant import dequantize_rows  # noqa: E402
from modelmgr.smoke.quant.nvfp4 import NvFp4Weight  # noqa: E402
from modelmgr.smoke.quantize import quantize_file  # noqa: E402

FAMILIES = {"flux1": "flux1", "flux2": "flux2", "z-image": "lumina2"}
"""Layout → the inspector's family (tiny Z-Image is narrower than 3840, so it reads as lumina2)."""
BOUNDS = {"fp8-scaled": 0.05, "nvfp4": 0.20, "q8_0": 0.01}


def _source(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _restore(path, fmt: str) -> dict:
    """Every quantized weight of an output file, dequantized to float32."""
    if fmt == "q8_0":
        reader = gguf.GGUFReader(str(path))
        out = {}
        for t in reader.tensors:
            if t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
                out[t.name] = dequantize_rows(torch.from_numpy(t.data.copy()), "Q8_0")
        return out
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    out = {}
    for key, value in tensors.items():
        if fmt == "fp8-scaled" and key.endswith(".scale_weight"):
            weight = key[: -len("scale_weight")] + "weight"
            out[weight] = tensors[weight].float() * value.float()
        if fmt == "nvfp4" and key.endswith(".comfy_quant"):
            layer = key[: -len(".comfy_quant")]
            assert json.loads(bytes(value.tolist())) == {"format": "nvfp4"}
            w = NvFp4Weight.from_comfy(tensors[f"{layer}.weight"], tensors[f"{layer}.weight_scale"],
                                       tensors[f"{layer}.weight_scale_2"])
            out[f"{layer}.weight"] = w.dequantize(torch.float32)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("fmt", sorted(BOUNDS))
def test_output_is_classified_and_within_error_bounds(models, quantized, family, fmt):
    path = quantized[(family, fmt)]
    ins = inspect_file(path)
    assert ins.precision == {"fp8-scaled": "fp8-scaled", "nvfp4": "nvfp4", "q8_0": "gguf-q8_0"}[fmt]
    assert ins.family == FAMILIES[family] and ins.role == "diffusion_model"
    assert not [w for w in ins.warnings if "ComfyUI" in w or "disagrees" in w], ins.warnings
    source = _source(models[family])
    restored = _restore(path, fmt)
    assert restored, "nothing was quantized"
    for key, value in restored.items():
        ref = source[key].float()
        value = value[: ref.shape[0], : ref.shape[1]]
        assert float((value - ref).norm() / ref.norm()) < BOUNDS[fmt], key


def test_fp8_scaled_layout(models, quantized):
    from safetensors import safe_open

    with safe_open(str(quantized[("flux1", "fp8-scaled")]), "pt") as f:
        keys = set(f.keys())
        marker = f.get_slice("scaled_fp8")
        assert marker.get_dtype() == "F8_E4M3" and marker.get_shape() == [0]
        scale = f.get_slice("double_blocks.0.img_attn.qkv.scale_weight")
        assert scale.get_dtype() == "F32" and scale.get_shape() == []
        assert f.get_slice("double_blocks.0.img_attn.qkv.weight").get_dtype() == "F8_E4M3"
        for edge in ("img_in.weight", "txt_in.weight", "final_layer.linear.weight", "time_in.in_layer.weight"):
            assert f.get_slice(edge).get_dtype() == "BF16", edge
            assert edge.replace("weight", "scale_weight") not in keys


def test_nvfp4_layout(quantized):
    from safetensors import safe_open

    with safe_open(str(quantized[("z-image", "nvfp4")]), "pt") as f:
        layer = "layers.0.feed_forward.w2"  # [96, 256]: rows padded to 16, scales to 128 x 4
        assert f.get_slice(f"{layer}.weight").get_dtype() == "U8"
        assert f.get_slice(f"{layer}.weight").get_shape() == [96, 128]
        assert f.get_slice(f"{layer}.weight_scale").get_dtype() == "F8_E4M3"
        assert f.get_slice(f"{layer}.weight_scale").get_shape() == [128, 16]
        assert f.get_slice(f"{layer}.weight_scale_2").get_shape() == []
        assert f.get_slice("x_embedder.weight").get_dtype() == "BF16"
        assert f.get_slice("cap_embedder.1.weight").get_dtype() == "BF16"


def test_q8_0_gguf_layout(quantized):
    reader = gguf.GGUFReader(str(quantized[("z-image", "q8_0")]))
    fields = {k: reader.get_field(k).contents() for k in ("general.architecture", "general.file_type")}
    assert fields == {"general.architecture": "lumina2", "general.file_type": 7}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["layers.0.attention.qkv.weight"] == "Q8_0"
    assert types["x_pad_token"] == "F32" and types["layers.0.attention.q_norm.weight"] == "F32"
    assert types["x_embedder.bias"] == "F32"
    flux = gguf.GGUFReader(str(quantized[("flux2", "q8_0")]))
    assert flux.get_field("general.architecture").contents() == "flux"
    ftypes = {t.name: t.tensor_type.name for t in flux.tensors}
    assert ftypes["double_stream_modulation_img.lin.weight"] == "F32"  # ComfyUI-GGUF keeps these high


def test_large_tensors_stay_aligned(quantized):
    for fmt in ("fp8-scaled", "nvfp4"):
        path = quantized[("flux1", fmt)]
        data = path.read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        for key, entry in header.items():
            begin, end = entry["data_offsets"] if key != "__metadata__" else (0, 0)
            if end - begin >= 256:
                assert (8 + n + begin) % 16 == 0, key


def test_refuses_bad_requests(models, quantized, tmp_path):
    with pytest.raises(UsageError, match="already fp8-scaled"):
        quantize_file(quantized[("flux1", "fp8-scaled")], tmp_path / "x.safetensors", "nvfp4", device="cpu")
    with pytest.raises(UsageError, match="--to"):
        quantize_file(models["flux1"], tmp_path / "x.safetensors", "int4", device="cpu")
    with pytest.raises(UsageError, match=r"\.gguf"):
        quantize_file(models["flux1"], tmp_path / "x.safetensors", "q8_0", device="cpu")
    with pytest.raises(UsageError, match="vae"):
        quantize_file(models["flux1-vae"], tmp_path / "x.safetensors", "nvfp4", device="cpu")
    existing = tmp_path / "exists.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists"):
        quantize_file(models["flux1"], existing, "nvfp4", device="cpu")
    assert existing.read_bytes() == b"keep me" and not list(tmp_path.glob("*.partial"))
