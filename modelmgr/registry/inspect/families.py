"""Which model a file holds, from tensor names and shapes (and GGUF ``general.architecture``).

The rules are ComfyUI's own (``model_detection.detect_unet_config``, ``sd.detect_te_model``, the
VAE init; formats.md §4), so a family named here is the model ComfyUI will build. Every rule is
anchored on one decisive key, found under any prefix (``model.diffusion_model.``,
``first_stage_model.``, ``text_encoders.…``), and the rule's other keys are looked up under the
same prefix.

Families and variants:

* diffusion models: ``flux1`` (variant ``dev``/``schnell``/``fill``; Kontext has dev's exact
  layout and reports ``dev``), ``flux2`` (``dev``/``klein-9b``/``klein-4b`` from ``txt_in``'s
  context width), ``z-image`` (``cap_embedder.1.weight`` is [3840, 2560]; Turbo and Base look the
  same), ``lumina2``;
* text encoders: ``clip-l``, ``clip-h``, ``clip-g``, ``t5`` (``xxl``/``xl``), ``gemma``,
  ``qwen3`` (``0.6b``/``2b``/``4b``/``8b`` from the hidden size), ``mistral`` (``24b``,
  ``24b-flux2-pruned``, ``3b``), ``qwen2.5-vl`` (``3b``/``7b``), ``llama``;
* VAEs: ``flux1-vae`` (16 latent channels, also Z-Image's and SD3's), ``flux2-vae``, ``sd-vae``,
  ``video-vae`` (5-D convolutions).

Roles: ``diffusion_model``, ``text_encoder``, ``vae``, ``checkpoint`` (a diffusion model bundled
with its VAE or text encoder), ``lora`` (adapter keys; no family is guessed) and ``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .model import ParsedHeader, TensorEntry

GGUF_DIFFUSION_ARCHS = frozenset({"flux", "sd1", "sdxl", "sd3", "aura", "hidream", "cosmos", "ltxv", "hyvid",
                                  "wan", "lumina2", "qwen_image"})
"""``general.architecture`` values ComfyUI-GGUF loads as diffusion models (``IMG_ARCH_LIST``)."""
GGUF_TEXT_ARCHS = frozenset({"t5", "t5encoder", "llama", "qwen2vl", "qwen3", "qwen3vl"})
"""…and as text encoders (``TXT_ARCH_LIST``)."""

_EXPECTED_ARCH = {"flux1": {"flux"}, "flux2": {"flux"}, "z-image": {"lumina2"}, "lumina2": {"lumina2"},
                  "qwen3": {"qwen3", "qwen3vl"}, "t5": {"t5", "t5encoder"}, "mistral": {"llama"},
                  "llama": {"llama"}, "qwen2.5-vl": {"qwen2vl"}}
_LORA_MARKS = (".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.", "lora_unet_", "lora_te", ".hada_w1", ".lokr_w1")
_BUNDLED_PARTS = ("first_stage_model.", "cond_stage_model.", "conditioner.", "text_encoders.", "vae.")
_QWEN3_SIZES = {1024: "0.6b", 2048: "2b", 2560: "4b", 4096: "8b"}
_FLUX2_VARIANTS = {15360: "dev", 12288: "klein-9b", 7680: "klein-4b"}
_T5_SIZES = {10240: "xxl", 5120: "xl"}
_DIFFUSION_FAMILIES = frozenset({"flux1", "flux2", "z-image", "lumina2"})
_VAE_FAMILIES = frozenset({"flux1-vae", "flux2-vae", "sd-vae", "video-vae", "vae"})


@dataclass(frozen=True)
class FamilyGuess:
    """The outcome of family detection."""

    family: str | None
    """Family name, or None when no rule matched."""
    variant: str | None
    """Variant within the family, where the weights tell it."""
    role: str
    """What kind of file it is (see the module docstring)."""
    warnings: tuple[str, ...] = ()
    """Disagreements, e.g. a GGUF architecture ComfyUI-GGUF would reject for this family."""


class _Keys:
    """Tensor names indexed by their last two components, so anchors are found without scans."""

    def __init__(self, tensors: Iterable[TensorEntry]) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.by_tail: dict[str, list[str]] = {}
        for t in tensors:
            self.shapes[t.name] = t.shape
            parts = t.name.rsplit(".", 2)
            self.by_tail.setdefault(".".join(parts[-2:]), []).append(t.name)
            self.by_tail.setdefault(parts[-1], []).append(t.name)

    def prefixes(self, anchor: str) -> list[str]:
        """Every prefix ``p`` (empty or ending in '.') such that ``p + anchor`` is a tensor, shortest first."""
        tail = ".".join(anchor.rsplit(".", 2)[-2:])
        found = [n[: len(n) - len(anchor)] for n in self.by_tail.get(tail, ())
                 if n.endswith(anchor) and (len(n) == len(anchor) or n[-len(anchor) - 1] == ".")]
        return sorted(found, key=len)

    def prefix(self, *anchors: str) -> str | None:
        for anchor in anchors:
            found = self.prefixes(anchor)
            if found:
                return found[0]
        return None

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def dim(self, name: str, axis: int) -> int | None:
        shape = self.shapes.get(name)
        return shape[axis] if shape is not None and len(shape) > axis else None

    def __contains__(self, name: str) -> bool:
        return name in self.shapes


def _flux(keys: _Keys) -> tuple[str, str | None, str] | None:
    p = keys.prefix("double_blocks.0.img_attn.norm.key_norm.scale", "double_blocks.0.img_attn.norm.key_norm.weight")
    if p is None or p + "img_in.weight" not in keys:
        return None
    if p + "double_stream_modulation_img.lin.weight" in keys:
        return "flux2", _FLUX2_VARIANTS.get(keys.dim(p + "txt_in.weight", 1)), p
    if keys.dim(p + "img_in.weight", 1) == 384:
        return "flux1", "fill", p
    return "flux1", "dev" if p + "guidance_in.in_layer.weight" in keys else "schnell", p


def _lumina(keys: _Keys) -> tuple[str, str | None, str] | None:
    p = keys.prefix("cap_embedder.1.weight")
    if p is None or p + "noise_refiner.0.attention.k_norm.weight" not in keys:
        return None
    return ("z-image" if keys.dim(p + "cap_embedder.1.weight", 0) == 3840 else "lumina2"), None, p


def _clip(keys: _Keys) -> tuple[str, str | None, str] | None:
    p = keys.prefix("text_model.encoder.layers.0.mlp.fc1.weight")
    if p is None:
        return None
    if p + "text_model.encoder.layers.30.mlp.fc1.weight" in keys:
        return "clip-g", None, p
    if p + "text_model.encoder.layers.22.mlp.fc1.weight" in keys:
        return "clip-h", None, p
    return "clip-l", None, p


def _t5(keys: _Keys) -> tuple[str, str | None, str] | None:
    p = keys.prefix("encoder.block.0.layer.1.DenseReluDense.wi_1.weight",
                    "encoder.block.0.layer.1.DenseReluDense.wi.weight")
    if p is None:
        return None
    return "t5", _T5_SIZES.get(keys.dim(p + "encoder.block.23.layer.1.DenseReluDense.wi_1.weight", 0)), p


def _llm(keys: _Keys) -> tuple[str, str | None, str] | None:
    """The decoder-only text encoders, in ComfyUI's order (gemma, qwen3, mistral, qwen2.5-vl, llama)."""
    p = keys.prefix("model.layers.0.post_feedforward_layernorm.weight")
    if p is not None:
        return "gemma", None, p
    p = keys.prefix("model.layers.0.post_attention_layernorm.weight")
    if p is None:
        return None
    hidden = keys.dim(p + "model.layers.0.post_attention_layernorm.weight", 0)
    if p + "model.layers.0.self_attn.q_norm.weight" in keys:
        return "qwen3", _QWEN3_SIZES.get(hidden), p
    if hidden == 5120:
        return "mistral", "24b" if p + "model.layers.39.post_attention_layernorm.weight" in keys \
            else "24b-flux2-pruned", p
    if hidden == 3072:
        return "mistral", "3b", p
    kbias = keys.dim(p + "model.layers.0.self_attn.k_proj.bias", 0)
    if kbias is not None:
        return "qwen2.5-vl", {256: "3b", 512: "7b"}.get(kbias), p
    return "llama", None, p


def _vae(keys: _Keys) -> tuple[str, str | None, str] | None:
    p = keys.prefix("decoder.conv_in.weight")
    if p is None:
        return None
    shape = keys.shape(p + "decoder.conv_in.weight") or ()
    if len(shape) == 5:
        return "video-vae", None, p
    channels = shape[1] if len(shape) == 4 else None
    if channels == 32 or p + "bn.running_mean" in keys:
        return "flux2-vae", None, p
    if channels == 16 and p + "post_quant_conv.weight" not in keys:
        return "flux1-vae", None, p
    if channels == 4 and p + "post_quant_conv.weight" in keys:
        return "sd-vae", None, p
    return "vae", None, p


def _llama_cpp_text_encoder(arch: str, keys: _Keys, kv: dict[str, Any]) -> tuple[str, str | None] | None:
    """llama.cpp-named text encoders (``blk.N.*``, ``token_embd``): trust general.architecture."""
    hidden = kv.get(f"{arch}.embedding_length") or keys.dim("token_embd.weight", 1)
    if arch in ("qwen3", "qwen3vl"):
        return "qwen3", _QWEN3_SIZES.get(hidden)
    if arch in ("t5", "t5encoder"):
        return "t5", _T5_SIZES.get(kv.get(f"{arch}.feed_forward_length"))
    if arch == "llama":
        if keys.shape("token_embd.weight") == (131072, 5120) or hidden == 5120:
            return "mistral", "24b" if kv.get("llama.block_count") == 40 else None
        return "llama", None
    if arch == "qwen2vl":
        return "qwen2.5-vl", None
    if arch.startswith("gemma"):
        return "gemma", None
    return None


_DIFFUSION_RULES = (_flux, _lumina)
_COMPONENT_RULES = (_clip, _t5, _llm, _vae)


def detect_family(parsed: ParsedHeader) -> FamilyGuess:
    """Family, variant and role of a parsed header."""
    names = [t.name for t in parsed.tensors]
    joined = "\n".join(names)
    if any(mark in joined for mark in _LORA_MARKS):
        return FamilyGuess(None, None, "lora")
    keys = _Keys(parsed.tensors)
    arch = parsed.kv.get("general.architecture") if parsed.format == "gguf" else None
    arch = arch if isinstance(arch, str) else None

    for rule in _DIFFUSION_RULES:
        found = rule(keys)
        if found:
            family, variant, prefix = found
            bundled = bool(prefix) and any(not n.startswith(prefix) and n.startswith(_BUNDLED_PARTS) for n in names)
            role = "checkpoint" if bundled else "diffusion_model"
            return FamilyGuess(family, variant, role, _arch_warnings(parsed, arch, family))
    for rule in _COMPONENT_RULES:
        found = rule(keys)
        if found:
            family, variant, _ = found
            role = "vae" if family in _VAE_FAMILIES else "text_encoder"
            return FamilyGuess(family, variant, role, _arch_warnings(parsed, arch, family))
    if arch is not None:
        guess = _llama_cpp_text_encoder(arch, keys, parsed.kv)
        if guess:
            return FamilyGuess(guess[0], guess[1], "text_encoder", _arch_warnings(parsed, arch, guess[0]))
    role = "unknown"
    if arch in GGUF_DIFFUSION_ARCHS or sum(n.startswith("model.diffusion_model.") for n in names) > 5:
        role = "diffusion_model"
    elif arch in GGUF_TEXT_ARCHS:
        role = "text_encoder"
    return FamilyGuess(None, None, role, _arch_warnings(parsed, arch, None))


def _arch_warnings(parsed: ParsedHeader, arch: str | None, family: str | None) -> tuple[str, ...]:
    """GGUF only: what ComfyUI-GGUF will make of ``general.architecture`` for this family."""
    if parsed.format != "gguf":
        return ()
    if arch is None:
        if family in _DIFFUSION_FAMILIES:
            return ("no general.architecture: ComfyUI-GGUF loads it in stable-diffusion.cpp compat mode",)
        return ("no general.architecture: ComfyUI-GGUF will reject this file",)
    if arch not in GGUF_DIFFUSION_ARCHS | GGUF_TEXT_ARCHS:
        return (f"general.architecture '{arch[:40]}' is not one ComfyUI-GGUF loads",)
    expected = _EXPECTED_ARCH.get(family or "")
    if expected and arch not in expected:
        return (f"general.architecture '{arch}' does not match the {family} tensors "
                f"(expected {' or '.join(sorted(expected))})",)
    return ()
