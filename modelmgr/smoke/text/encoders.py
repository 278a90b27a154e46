"""A ComfyUI text-encoder file → a ``transformers`` module on the device, in BF16.

ComfyUI's text-encoder files carry the Hugging Face key names (``text_model.*`` for CLIP,
``shared`` + ``encoder.block.N.*`` for T5, ``model.layers.N.*`` for Qwen3 and Mistral) but no
``config.json``, so, as for the diffusion models (arch.py), every config value is read off the
tensor shapes and nothing is fetched from a hub. The few values no shape holds (RoPE base, norm
epsilon, activation) are per-family constants, each with the reason it is right.

Weights go through the diffusion loader's machinery: the reader puts the file's bytes in memory
once, and ``loader.assemble_layers`` turns legacy ``scaled_fp8`` / ``comfy_quant`` / plain-FP8 layers
into weight objects (one set of rules for every file modelmgr loads). Unlike the diffusion model,
which is benchmarked in its stored format, the text encoder is only a means to a conditioning:
each quantized weight is dequantized to BF16 as it is moved to the device, one tensor at a time,
so device memory holds the BF16 module and nothing more.

Only the layers whose hidden states are read are built: FLUX.2 reads Mistral's layer 30 of 40,
so layers 31-40 are skipped (a quarter of a 24 B model).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import BadFileError
from .. import deps
from ..arch import Shapes, count_indexed, need_tensor
from ..reader import ModelFile, load_all, open_model

TOKENIZER_TENSORS = ("tokenizer_json", "spiece_model", "tekken_model")
"""Tokenizers some ComfyUI files embed as U8 tensors (formats.md §4.2); never model weights."""

KINDS = {"clip": "CLIP text model", "t5": "T5 encoder", "qwen3": "Qwen3", "mistral": "Mistral"}
SUPPORTED = "CLIP-L, T5-XXL, Qwen3 and Mistral-Small-3 text encoders"


@dataclass(frozen=True)
class EncoderFile:
    """A text-encoder file, known from its header alone (nothing loaded yet)."""

    model: ModelFile
    kind: str
    """``clip``, ``t5``, ``qwen3`` or ``mistral``."""
    shapes: dict
    vocab: int
    """Rows of the token-embedding table: token ids must stay below it."""
    layers: int
    """Transformer layers in the file."""

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def path(self) -> Path:
        return self.model.path

    def embedded(self, tensor: str) -> bytes | None:
        """The bytes of an embedded tokenizer tensor (``tokenizer_json`` …), or None."""
        entry = next((e for e in self.model.header.tensors if e.name == tensor), None)
        if entry is None:
            return None
        with open(self.model.path, "rb") as f:
            f.seek(entry.start)
            data = f.read(entry.nbytes)
        if len(data) != entry.nbytes:
            raise BadFileError(f"{self.name}: the file ends inside tensor {tensor!r}")
        return data


def open_encoder(path: Path) -> EncoderFile:
    """Header, family and sizes of a text-encoder file; BadFileError when it is not one we run."""
    model = open_model(path)
    if model.is_gguf:
        raise BadFileError(f"{model.name}: GGUF text encoders are not supported by the smoke test",
                           "use the safetensors text encoder of the bundle")
    shapes = {e.name: tuple(e.shape) for e in model.header.tensors}
    kind = detect(shapes, model.name)
    if kind == "clip":
        vocab, layers = _need(shapes, "text_model.embeddings.token_embedding.weight", model.name)[0], \
            count_indexed(shapes, "text_model.encoder.layers")
    elif kind == "t5":
        vocab, layers = _need(shapes, "shared.weight", model.name)[0], count_indexed(shapes, "encoder.block")
    else:
        vocab, layers = _need(shapes, "model.embed_tokens.weight", model.name)[0], count_indexed(shapes, "model.layers")
    return EncoderFile(model, kind, shapes, vocab, layers)


def detect(shapes: Shapes, name: str) -> str:
    """The family by its decisive keys, in ComfyUI's order (``comfy/sd.py::detect_te_model``)."""
    if "text_model.encoder.layers.0.mlp.fc1.weight" in shapes:
        return "clip"
    if "shared.weight" in shapes and "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes:
        return "t5"
    if "model.layers.0.post_attention_layernorm.weight" in shapes:
        if "model.layers.0.self_attn.q_norm.weight" in shapes:
            return "qwen3"
        if "model.layers.0.post_feedforward_layernorm.weight" not in shapes and \
                "model.layers.0.self_attn.k_proj.bias" not in shapes:  # Gemma / Qwen2.5-VL are not ours
            return "mistral"
    raise BadFileError(f"{name}: not a text encoder the smoke test runs ({SUPPORTED})")


def _need(shapes: Shapes, key: str, name: str) -> tuple[int, ...]:
    return need_tensor(shapes, key, name, "text encoder")


def _split(rows: int, head_dim: int, what: str, name: str) -> int:
    if head_dim <= 0 or rows % head_dim:
        raise BadFileError(f"{name}: {what} has {rows} rows, not a multiple of the head width {head_dim}")
    return rows // head_dim


def config(enc: EncoderFile, layers: int):
    """The transformers config of ``enc`` with ``layers`` layers, every size from the shapes."""
    tf = deps.transformers("the text encoder")
    s, name = enc.shapes, enc.name
    if enc.kind == "clip":
        hidden = _need(s, "text_model.embeddings.token_embedding.weight", name)[1]
        # CLIP heads are 64 wide in every released size (L: 12 × 64, H: 16, G: 20); no shape says so.
        # A narrower file (the tests') is one head.
        heads = hidden // 64 if hidden % 64 == 0 else 1
        # OpenAI's CLIP-L (the one FLUX.1 uses) was trained with quick_gelu; the last two vocabulary
        # rows are <|startoftext|> / <|endoftext|>, and the pooled vector is read at the first EOS.
        return tf.CLIPTextConfig(
            vocab_size=enc.vocab, hidden_size=hidden, num_attention_heads=heads,
            intermediate_size=_need(s, "text_model.encoder.layers.0.mlp.fc1.weight", name)[0],
            num_hidden_layers=layers, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            max_position_embeddings=_need(s, "text_model.embeddings.position_embedding.weight", name)[0],
            bos_token_id=enc.vocab - 2, eos_token_id=enc.vocab - 1, pad_token_id=enc.vocab - 1)
    if enc.kind == "t5":
        bias = _need(s, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", name)
        heads = bias[1]  # [buckets, heads]
        inner = _need(s, "encoder.block.0.layer.0.SelfAttention.q.weight", name)[0]  # heads × d_kv
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in s
        ff = _need(s, "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight", name)[0]
        if heads <= 0 or inner % heads:
            raise BadFileError(f"{name}: attention width {inner} does not split into {heads} heads")
        # T5 v1.1 (FLUX's T5-XXL) is gated-GELU with eps 1e-6 and relative-position distance 128, as
        # in Google's release; the bias table gives the bucket count and the head count.
        return tf.T5Config(
            vocab_size=enc.vocab, d_model=_need(s, "shared.weight", name)[1], num_layers=layers, num_heads=heads,
            d_kv=inner // heads, d_ff=ff, feed_forward_proj="gated-gelu" if gated else "relu",
            relative_attention_num_buckets=bias[0], relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
            is_encoder_decoder=False, use_cache=False)
    hidden = _need(s, "model.embed_tokens.weight", name)[1]
    q_rows = _need(s, "model.layers.0.self_attn.q_proj.weight", name)[0]
    k_rows = _need(s, "model.layers.0.self_attn.k_proj.weight", name)[0]
    inner = _need(s, "model.layers.0.mlp.gate_proj.weight", name)[0]
    if enc.kind == "qwen3":
        head = _need(s, "model.layers.0.self_attn.q_norm.weight", name)[0]  # the per-head norm is one head wide
        # Qwen3 (4B, 8B: the Z-Image and FLUX.2-klein encoders): RoPE base 1e6, RMSNorm eps 1e-6.
        return tf.Qwen3Config(
            vocab_size=enc.vocab, hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers,
            num_attention_heads=_split(q_rows, head, "q_proj", name),
            num_key_value_heads=_split(k_rows, head, "k_proj", name), head_dim=head, rope_theta=1e6,
            rms_norm_eps=1e-6, max_position_embeddings=40960, use_cache=False)
    # Mistral has no per-head norm to read the head width from; every Mistral / Llama of these sizes
    # (Small 3 24 B, Ministral 3 B, Llama 3 8 B) uses 128. A narrower file (the tests') gets the widest
    # head that divides both projections. Mistral-Small-3.x: RoPE base 1e9, RMSNorm eps 1e-5.
    head = 128 if q_rows % 128 == 0 and k_rows % 128 == 0 else math.gcd(q_rows, k_rows)
    return tf.MistralConfig(
        vocab_size=enc.vocab, hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers,
        num_attention_heads=q_rows // head, num_key_value_heads=k_rows // head, head_dim=head, rope_theta=1e9,
        rms_norm_eps=1e-5, max_position_embeddings=131072, sliding_window=None, use_cache=False)


_CLASSES = {"clip": "CLIPTextModel", "t5": "T5EncoderModel", "qwen3": "Qwen3Model", "mistral": "MistralModel"}
_NAMESPACE = {"clip": "text_model.", "t5": "encoder.", "qwen3": "model.", "mistral": "model."}
"""Where the module's own weights live in the file; keys elsewhere (``lm_head``, CLIP's
``text_projection``, a vision tower, embedded tokenizers) are not part of the text encoder."""
_LAYERS = {"clip": "encoder.layers.", "t5": "encoder.block.", "qwen3": "layers.", "mistral": "layers."}


def _module_key(enc: EncoderFile, key: str, layers: int, expected) -> str | None:
    """The module's name for file key ``key``, or None when the module does not use it."""
    space = _NAMESPACE[enc.kind]
    if enc.kind == "t5":
        if key != "shared.weight" and not key.startswith(space):
            return None
        local = key
    elif key.startswith(space):
        local = key[len(space):]
    else:
        return None
    prefix = _LAYERS[enc.kind]
    if local.startswith(prefix) and int(local[len(prefix):].split(".", 1)[0]) >= layers:
        return None  # a layer after the deepest one read
    if local == "norm.weight" and layers < enc.layers:
        return None  # the final norm follows the last layer, which is not built
    # transformers 5 dropped CLIPTextModel's ``text_model`` level; 4.x keeps the file's name
    return key if local not in expected and key in expected else local


@contextlib.contextmanager
def _parameters_on_meta():
    """Build a module with its parameters on the meta device (no memory, no random init) while
    its buffers (RoPE frequencies, CLIP position ids) are computed for real, as loading needs them."""
    torch = deps.torch()
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=False)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


@contextlib.contextmanager
def _quiet_transformers():
    """transformers logs config notes at warning level; they mean nothing to a smoke-test user."""
    logging = deps.transformers().utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


@dataclass
class LoadedEncoder:
    module: object
    seconds: float


def load(enc: EncoderFile, device: str, layers: int | None = None) -> LoadedEncoder:
    """The module with the file's weights in BF16 on ``device``, ``layers`` layers deep (default all)."""
    from ..loader import assemble_layers
    from ..quant.base import QuantWeight

    torch = deps.torch("the text encoder")
    tf = deps.transformers("the text encoder")
    started = time.perf_counter()
    layers = enc.layers if layers is None else layers
    with _quiet_transformers(), _parameters_on_meta():
        module = getattr(tf, _CLASSES[enc.kind])(config(enc, layers))
    expected = module.state_dict()
    raw, _ = load_all(enc.model, "cpu")
    for key in [k for k in raw if k in TOKENIZER_TENSORS or k.endswith("position_ids")]:
        del raw[key]  # tokenizer bytes; CLIP's position ids are rebuilt by the module
    weights = assemble_layers(raw, enc.model)
    state = {}
    for key, value in weights.items():
        local = _module_key(enc, key, layers, expected)
        if local is None:
            continue
        if isinstance(value, QuantWeight):
            value = value.with_tensors({k: t.to(device) for k, t in value.tensors().items()})
            state[local] = value.dequantize(torch.bfloat16)
        else:
            state[local] = value.to(device, torch.bfloat16) if value.is_floating_point() else value.to(device)
    del raw, weights
    if enc.kind == "t5" and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]  # tied in T5
    _fill(module, expected, state, enc.name)
    module.to(device).eval().requires_grad_(False)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return LoadedEncoder(module, time.perf_counter() - started)


def _fill(module, expected: dict, state: dict, name: str) -> None:
    """Every parameter from the file, every file tensor of the module used, shapes exact."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise BadFileError(f"{name}: no tensor for {missing[0]} ({len(missing)} missing); not a complete text encoder")
    unused = sorted(set(state) - set(expected))
    if unused:
        raise BadFileError(f"{name}: {len(unused)} tensor(s) the text encoder has no place for (first: {unused[0]!r})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BadFileError(f"{name}: {key} is {list(value.shape)}, the text encoder needs "
                               f"{list(expected[key].shape)}")
    module.load_state_dict(state, strict=True, assign=True)
