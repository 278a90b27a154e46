"""Family, variant and role detection on each family's real key layout."""

from __future__ import annotations

import logging

import pytest

from modelmgr.registry.inspect import inspect_file, inspect_header_bytes
from tests.fixtures.model_files import (
    as_dtype,
    clip_layout,
    comfy_quant,
    decoder_lm_layout,
    edge_layers_bf16,
    flux1_layout,
    flux2_layout,
    mistral_layout,
    qwen3_layout,
    safetensors_bytes,
    t5_layout,
    vae_layout,
    with_prefix,
    write_any,
    write_gguf,
    zimage_layout,
)

logging.getLogger("gguf").setLevel(logging.ERROR)

LAYOUTS = {
    "flux1-dev": (flux1_layout(), ("flux1", "dev", "diffusion_model")),
    "flux1-schnell": (flux1_layout(dev=False), ("flux1", "schnell", "diffusion_model")),
    "flux1-fill": (flux1_layout(in_channels=384), ("flux1", "fill", "diffusion_model")),
    "flux2-dev": (flux2_layout("dev"), ("flux2", "dev", "diffusion_model")),
    "flux2-klein-9b": (flux2_layout("klein-9b"), ("flux2", "klein-9b", "diffusion_model")),
    "flux2-klein-4b": (flux2_layout("klein-4b"), ("flux2", "klein-4b", "diffusion_model")),
    "z-image": (zimage_layout(), ("z-image", None, "diffusion_model")),
    "lumina2": (zimage_layout(cap_shape=(2304, 2304), pad_tokens=False), ("lumina2", None, "diffusion_model")),
    "qwen3-4b": (qwen3_layout(), ("qwen3", "4b", "text_encoder")),
    "qwen3-8b": (qwen3_layout(4096), ("qwen3", "8b", "text_encoder")),
    "mistral-24b": (mistral_layout(), ("mistral", "24b", "text_encoder")),
    "mistral-pruned": (mistral_layout(layers=30), ("mistral", "24b-flux2-pruned", "text_encoder")),
    "qwen2.5-vl": (decoder_lm_layout(hidden=2048, q_norm=False, k_bias=256), ("qwen2.5-vl", "3b", "text_encoder")),
    "t5-xxl": (t5_layout(), ("t5", "xxl", "text_encoder")),
    "clip-l": (clip_layout(), ("clip-l", None, "text_encoder")),
    "clip-g": (clip_layout(layers=32, projection=True), ("clip-g", None, "text_encoder")),
    "flux1-vae": (vae_layout(), ("flux1-vae", None, "vae")),
    "flux2-vae": (vae_layout(latent=32, batch_norm=True), ("flux2-vae", None, "vae")),
    "sd-vae": (vae_layout(latent=4, post_quant_conv=True), ("sd-vae", None, "vae")),
    "prefixed flux1": (with_prefix(flux1_layout(), "model.diffusion_model."), ("flux1", "dev", "diffusion_model")),
    "checkpoint": ({**with_prefix(flux1_layout(dev=False), "model.diffusion_model."),
                    **with_prefix(vae_layout(), "first_stage_model.")}, ("flux1", "schnell", "checkpoint")),
    "lora": ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": flux1_layout()["img_in.weight"]},
             (None, None, "lora")),
    "unknown": ({"foo.weight": flux1_layout()["img_in.weight"]}, (None, None, "unknown")),
}


@pytest.mark.parametrize("label", list(LAYOUTS))
def test_safetensors_families(tmp_path, label):
    layout, expected = LAYOUTS[label]
    ins = inspect_file(write_any(tmp_path / "m.safetensors", layout))
    assert (ins.family, ins.variant, ins.role) == expected


def test_zimage_real_caption_embedder_file_is_sparse_and_fast(tmp_path):
    path = write_any(tmp_path / "z.safetensors", zimage_layout())
    assert path.stat().st_size > 19_000_000
    assert path.stat().st_blocks * 512 < 2_000_000  # zeros written as holes
    assert inspect_file(path).param_count > 3840 * 2560


def test_families_survive_quantization():
    for layout in (comfy_quant(zimage_layout(), edge_layers_bf16("nvfp4"))[0],
                   as_dtype(flux2_layout("klein-4b"), "BF16", "F8_E4M3"),
                   comfy_quant(qwen3_layout(), "float8_e4m3fn")[0]):
        data = safetensors_bytes(layout)
        assert inspect_header_bytes(data, len(data)).family in ("z-image", "flux2", "qwen3")


@pytest.mark.parametrize(("layout", "arch", "expected", "warning"), [
    (flux1_layout(hidden=64), "flux", ("flux1", "dev", "diffusion_model"), None),
    (zimage_layout(dim=64, cap_shape=(3840, 2560)), "lumina2", ("z-image", None, "diffusion_model"), None),
    (zimage_layout(dim=64), "flux", ("z-image", None, "diffusion_model"), "does not match the z-image tensors"),
    (flux2_layout("klein-4b"), None, ("flux2", "klein-4b", "diffusion_model"), "compat mode"),
    (flux1_layout(), "sd99", ("flux1", "dev", "diffusion_model"), "not one ComfyUI-GGUF loads"),
])
def test_gguf_families_and_architecture(tmp_path, layout, arch, expected, warning):
    ins = inspect_file(write_gguf(tmp_path / "m.gguf", layout, arch, "Q8_0"))
    assert (ins.family, ins.variant, ins.role) == expected
    assert (warning is None and ins.warnings == ()) or any(warning in w for w in ins.warnings)


def test_llama_cpp_text_encoders_by_architecture(tmp_path):
    hidden = 2560
    layout = {"token_embd.weight": qwen3_layout()["model.embed_tokens.weight"],
              "blk.0.attn_q.weight": qwen3_layout()["model.layers.0.self_attn.q_proj.weight"],
              "blk.0.attn_norm.weight": qwen3_layout()["model.layers.0.input_layernorm.weight"]}
    ins = inspect_file(write_gguf(tmp_path / "q.gguf", layout, "qwen3", "Q8_0",
                                  kv=[("qwen3.embedding_length", hidden)]))
    assert (ins.family, ins.variant, ins.role) == ("qwen3", "4b", "text_encoder")
    t5 = {"enc.blk.0.ffn_up.weight": t5_layout(blocks=1)["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"]}
    ins = inspect_file(write_gguf(tmp_path / "t5.gguf", t5, "t5encoder", "Q8_0",
                                  kv=[("t5encoder.feed_forward_length", 10240)]))
    assert (ins.family, ins.variant, ins.role) == ("t5", "xxl", "text_encoder")
    ins = inspect_file(write_gguf(tmp_path / "l.gguf", layout, "llama", "Q8_0"))
    assert (ins.family, ins.role) == ("llama", "text_encoder")
