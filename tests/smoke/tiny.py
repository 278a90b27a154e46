"""Tiny real checkpoints for the smoke tests: each family's real key names, consistent small shapes.

FLUX.1 and FLUX.2 reuse the inspector fixtures' layouts (tests/fixtures/model_files.py) at sizes
the diffusers classes accept; Z-Image and the two VAEs are laid out here, because the inspector
fixtures only need header-level shapes for those. Weights are random (seeded), scaled by
1/sqrt(fan_in) so activations stay O(1) and the outputs are meaningful to compare.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.model_files import T, flux1_layout, flux2_layout

ZIMAGE_DIM = 96
"""Head width 32 → 3 heads; the feed-forward is 8/3 × 96 = 256 wide, as diffusers hard-codes."""


def _lin(out: dict, name: str, rows: int, cols: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = T("BF16", (rows, cols))
    if bias:
        out[f"{name}.bias"] = T("BF16", (rows,))


def zimage_layout(dim: int = ZIMAGE_DIM, head: int = 32, layers: int = 1, refiners: int = 1, cap: int = 64,
                  channels: int = 16) -> dict[str, T]:
    """Z-Image in ComfyUI's key names (fused ``attention.qkv``, ``x_pad_token``, ``cap_pad_token``)."""
    ffn, adaln = int(dim / 3 * 8), min(dim, 256)
    out: dict[str, T] = {}
    _lin(out, "x_embedder", dim, 4 * channels)
    _lin(out, "t_embedder.mlp.0", 1024, 256)
    _lin(out, "t_embedder.mlp.2", adaln, 1024)
    out["cap_embedder.0.weight"] = T("BF16", (cap,))
    _lin(out, "cap_embedder.1", dim, cap)
    out["x_pad_token"] = T("BF16", (1, dim))
    out["cap_pad_token"] = T("BF16", (1, dim))
    blocks = [(f"noise_refiner.{i}", True) for i in range(refiners)] + \
             [(f"context_refiner.{i}", False) for i in range(refiners)] + [(f"layers.{i}", True) for i in range(layers)]
    for p, modulation in blocks:
        _lin(out, f"{p}.attention.qkv", 3 * dim, dim, bias=False)
        _lin(out, f"{p}.attention.out", dim, dim, bias=False)
        out[f"{p}.attention.q_norm.weight"] = T("BF16", (head,))
        out[f"{p}.attention.k_norm.weight"] = T("BF16", (head,))
        _lin(out, f"{p}.feed_forward.w1", ffn, dim, bias=False)
        _lin(out, f"{p}.feed_forward.w2", dim, ffn, bias=False)
        _lin(out, f"{p}.feed_forward.w3", ffn, dim, bias=False)
        for norm in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
            out[f"{p}.{norm}.weight"] = T("BF16", (dim,))
        if modulation:
            _lin(out, f"{p}.adaLN_modulation.0", 4 * dim, adaln)
    _lin(out, "final_layer.linear", 4 * channels, dim)
    _lin(out, "final_layer.adaLN_modulation.1", dim, adaln)
    return out


def vae_layout(latent: int = 16, chans: tuple[int, ...] = (32, 64), layers: int = 1, flux2: bool = False) -> dict[str, T]:
    """An LDM-format autoencoder (BFL's ``ae.safetensors`` names); ``flux2`` adds FLUX.2's batch norm."""
    out: dict[str, T] = {}

    def conv(name: str, cout: int, cin: int, k: int = 3) -> None:
        out[f"{name}.weight"] = T("F32", (cout, cin, k, k))
        out[f"{name}.bias"] = T("F32", (cout,))

    def norm(name: str, c: int) -> None:
        out[f"{name}.weight"] = T("F32", (c,))
        out[f"{name}.bias"] = T("F32", (c,))

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    def mid(part: str, c: int) -> None:
        resnet(f"{part}.mid.block_1", c, c)
        norm(f"{part}.mid.attn_1.norm", c)
        for q in ("q", "k", "v", "proj_out"):
            conv(f"{part}.mid.attn_1.{q}", c, c, 1)
        resnet(f"{part}.mid.block_2", c, c)

    conv("encoder.conv_in", chans[0], 3)
    cin = chans[0]
    for i, c in enumerate(chans):
        for j in range(layers):
            resnet(f"encoder.down.{i}.block.{j}", cin, c)
            cin = c
        if i < len(chans) - 1:
            conv(f"encoder.down.{i}.downsample.conv", c, c)
    mid("encoder", cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", 2 * latent, cin)
    conv("decoder.conv_in", chans[-1], latent)
    mid("decoder", chans[-1])
    cin = chans[-1]
    for i in reversed(range(len(chans))):
        for j in range(layers + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, chans[i])
            cin = chans[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", chans[i], chans[i])
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", 3, cin)
    if flux2:
        conv("quant_conv", 2 * latent, 2 * latent, 1)
        conv("post_quant_conv", latent, latent, 1)
        out["bn.running_mean"] = T("F32", (4 * latent,))
        out["bn.running_var"] = T("F32", (4 * latent,))
    return out


LAYOUTS = {
    "flux1": lambda: flux1_layout(hidden=64, head_dim=16, context=64),
    "flux2": lambda: flux2_layout("klein-4b", hidden=64, head_dim=16),
    "z-image": zimage_layout,
}


def random_tensor(name: str, t: T, gen, device: str = "cpu"):
    """One seeded random tensor: weights ~ N(0, 1/fan_in), norms ≈ 1, variances positive, biases small."""
    import torch

    x = torch.randn(t.shape, generator=gen, device=device)
    if name.endswith("running_var"):
        x = x.abs() + 0.5
    elif len(t.shape) == 1 and ("norm" in name or name.endswith(".scale") or name == "cap_embedder.0.weight"):
        x = 1 + 0.05 * x
    elif len(t.shape) >= 2:
        fan_in = 1
        for d in t.shape[1:]:
            fan_in *= d
        x = x / fan_in ** 0.5
    else:
        x = 0.02 * x
    return x.to({"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16}[t.dtype])


def random_tensors(layout: dict[str, T], seed: int = 0) -> dict:
    """Seeded random values for a whole (small) layout, on the CPU."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, t, gen) for name, t in sorted(layout.items())}


def write(path: Path, layout: dict[str, T], seed: int = 0) -> Path:
    """Save through the real ``safetensors.torch.save_file``."""
    from safetensors.torch import save_file

    save_file(random_tensors(layout, seed), str(path))
    return Path(path)


def bundle_yaml(name: str, files: tuple[tuple[str, str, str, str], ...], tail: str = "") -> str:
    """A user bundle over tiny test files: ``(role, file name, folder, format)`` each; ``tail`` appended."""
    lines = [f"name: {name}", "title: Tiny test bundle", "family: z-image", "precision: bf16",
             "licence: apache-2.0", "gated: false", "files:"]
    for role, filename, folder, fmt in files:
        lines += [f"  - role: {role}", f'    source: "hf:org/tiny@{"a" * 40}/{filename}"', f"    folder: {folder}",
                  f"    format: {fmt}"]
    return "\n".join(lines) + "\n" + tail


# ----------------------------------------------------------------------------- text encoders

TE_KINDS = ("qwen3", "mistral", "t5", "clip")


def text_encoder_module(kind: str, *, hidden: int = 64, layers: int = 2, vocab: int = 320, seed: int = 0):
    """A tiny randomly initialised transformers text encoder of ``kind`` (head widths 16 / 8)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "qwen3":
        config = tf.Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                num_hidden_layers=layers, num_attention_heads=hidden // 16, num_key_value_heads=2,
                                head_dim=16, rope_theta=1e6, rms_norm_eps=1e-6)
        return tf.Qwen3Model(config)
    if kind == "mistral":  # one kv head: the widest head dividing q and k rows is the real head width
        config = tf.MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                  num_hidden_layers=layers, num_attention_heads=hidden // 8, num_key_value_heads=1,
                                  head_dim=8, rope_theta=1e9, rms_norm_eps=1e-5, sliding_window=None)
        return tf.MistralModel(config)
    if kind == "t5":
        config = tf.T5Config(vocab_size=vocab, d_model=hidden, d_kv=16, d_ff=2 * hidden, num_layers=layers,
                             num_heads=hidden // 16, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
        return tf.T5EncoderModel(config)
    config = tf.CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                               num_hidden_layers=layers, num_attention_heads=1, max_position_embeddings=77,
                               hidden_act="quick_gelu", bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                               pad_token_id=vocab - 1)
    return tf.CLIPTextModel(config)


def comfy_text_encoder_state(kind: str, module) -> dict:
    """The module's weights under ComfyUI's key names (``model.*``, ``text_model.*``, T5's own)."""
    import torch

    state = {k: v.detach().to(torch.bfloat16) for k, v in module.state_dict().items()
             if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"}
    if kind in ("qwen3", "mistral"):
        return {f"model.{k}": v for k, v in state.items()}
    if kind == "clip":
        return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
    return state


def write_text_encoder(path: Path, kind: str, *, module=None, fp8_scaled: bool = False, extra: dict | None = None,
                       **sizes) -> Path:
    """A tiny text encoder (``module``, else a new one of ``sizes``) in ComfyUI's layout; ``fp8_scaled``
    = ComfyUI's legacy scaled FP8 (F8_E4M3 linear weights, F32 ``scale_weight`` scalars, a
    ``scaled_fp8`` marker), as in t5xxl_fp8_e4m3fn_scaled."""
    import torch
    from safetensors.torch import save_file

    from modelmgr.smoke.quant.fp8 import quantize_weight

    state = comfy_text_encoder_state(kind, module if module is not None else text_encoder_module(kind, **sizes))
    if fp8_scaled:
        for key in [k for k, v in state.items() if v.dim() == 2 and "embed" not in k and k != "shared.weight"
                    and "relative_attention_bias" not in k]:
            state[key], state[key[: -len("weight")] + "scale_weight"] = quantize_weight(state[key])
        state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    state.update(extra or {})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return Path(path)


def word_tokenizer(size: int, *, first: tuple[str, ...] = ("[UNK]",), last: tuple[str, ...] = (),
                   template: str | None = None):
    """A word-level ``tokenizers.Tokenizer`` of exactly ``size`` tokens: the special tokens ``first``
    (ids 0, 1 …; ``[UNK]`` among them), ordinary words, then ``last`` (CLIP's BOS/EOS sit at the end
    of its vocabulary). ``template`` (e.g. ``"$A </s>"``) is the post-processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["a", "red", "fox", "cat", "photograph", "of", "in", "snow"]
    words += [f"w{i}" for i in range(size - len(first) - len(last) - len(words))]
    vocab = {token: i for i, token in enumerate((*first, *words, *last))}
    assert len(vocab) == size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([*first, *last])
    if template:
        specials = [(t, vocab[t]) for t in (*first, *last) if t in template.split()]
        tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return tok
