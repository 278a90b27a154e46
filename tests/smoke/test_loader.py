"""The pieces under the loader: diffusers' converters applied through row labels to quantized
weights, config inferred from shapes, and tensor views that cuBLAS can use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from modelmgr.errors import BadFileError  # noqa: E402
from modelmgr.smoke import arch as arch_mod  # noqa: E402
from modelmgr.smoke.quant import fp8, gguf_dequant, nvfp4  # noqa: E402
from modelmgr.smoke.quant.base import QuantWeight  # noqa: E402
from modelmgr.smoke.rowmap import apply_converter  # noqa: E402
from tests.fixtures.model_files import T, write_safetensors  # noqa: E402
from tests.smoke import tiny  # noqa: E402


def _quantize(name: str, value, fmt: str):
    if value.dim() != 2 or not name.endswith(".weight"):
        return value
    if fmt == "fp8":
        data, scale = fp8.quantize_weight(value)
        return fp8.Fp8Weight(tuple(value.shape), data, scale)
    if fmt == "nvfp4":
        return nvfp4.NvFp4Weight.from_comfy(*nvfp4.quantize(value)).trimmed(value.shape[1])
    return gguf_dequant.GGUFWeight(tuple(value.shape), gguf_dequant.quantize_q8_0(value), "Q8_0")


@pytest.mark.parametrize("family", sorted(tiny.LAYOUTS))
@pytest.mark.parametrize("fmt", ["fp8", "nvfp4", "q8_0"])
def test_converter_on_quantized_weights_equals_converter_on_dequantized(family, fmt):
    state = {k: v.float() for k, v in tiny.random_tensors(tiny.LAYOUTS[family]()).items()}
    quantized = {k: _quantize(k, v, fmt) for k, v in state.items()}
    plain = {k: (v.dequantize(torch.float32) if isinstance(v, QuantWeight) else v) for k, v in quantized.items()}
    arch = arch_mod.detect({"z-image": "z-image"}.get(family, family), {k: tuple(v.shape) for k, v in state.items()},
                           "t")
    assert arch.class_name in arch_mod.MODEL_CLASSES  # imported before the load's clock starts
    ours = apply_converter(arch.convert_fn(), quantized, "t", arch.layouts)
    ref = apply_converter(arch.convert_fn(), plain, "t", arch.layouts)
    assert set(ours) == set(ref)
    for key, value in ours.items():
        got = value.dequantize(torch.float32) if isinstance(value, QuantWeight) else value
        assert torch.equal(got, ref[key]), key
    cut = [k for k, v in ours.items() if k.endswith("attn.to_k.weight") or k.endswith("attention.to_k.weight")]
    assert cut and all(isinstance(ours[k], QuantWeight) for k in cut)  # fused QKV was cut, still quantized


def test_flux1_converter_is_driven_at_any_width():
    """diffusers' FLUX.1 converter hard-codes width 3072; padded labels make it split any width."""
    state = tiny.random_tensors(tiny.LAYOUTS["flux1"]())
    arch = arch_mod.detect("flux1", {k: tuple(v.shape) for k, v in state.items()}, "t")
    out = apply_converter(arch.convert_fn(), state, "t", arch.layouts)
    linear1 = state["single_blocks.0.linear1.weight"]
    q, mlp = out["single_transformer_blocks.0.attn.to_q.weight"], out["single_transformer_blocks.0.proj_mlp.weight"]
    assert torch.equal(q, linear1[:64]) and torch.equal(mlp, linear1[192:])
    assert arch.config["num_attention_heads"] == 4 and sum(arch.config["axes_dims_rope"]) == 16


def test_rope_axes_and_unsupported_families():
    assert arch_mod.rope_axes(128, (16, 56, 56), "t") == [16, 56, 56]
    assert arch_mod.rope_axes(32, (32, 48, 48), "t") == [8, 12, 12]
    with pytest.raises(BadFileError, match="too small"):
        arch_mod.rope_axes(4, (16, 56, 56), "t")
    with pytest.raises(BadFileError, match="FLUX.1 .* Z-Image"):
        arch_mod.detect("qwen3", {}, "t")


def test_misaligned_tensors_are_realigned(tmp_path):
    from modelmgr.smoke.reader import load_all, open_model

    data = torch.arange(64 * 64, dtype=torch.bfloat16).reshape(64, 64)
    layout = {"a.scale_weight": T("F32", (), b"\x00\x00\x80\x3f"),  # written first: 4 bytes, so
              "b.weight": T("BF16", (64, 64), data.view(torch.uint8).numpy().tobytes())}  # b starts at 4
    path = write_safetensors(tmp_path / "odd.safetensors", layout)
    tensors, stats = load_all(open_model(path), "cpu")
    assert stats.bytes == 4 + 64 * 64 * 2
    assert all(t.data_ptr() % 16 == 0 for t in tensors.values())
    assert torch.equal(tensors["b.weight"], data) and float(tensors["a.scale_weight"]) == 1.0
