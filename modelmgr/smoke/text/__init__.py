"""Text conditioning from the bundle's text encoder(s), as each family's diffusers pipeline builds it.

Asked for (``--prompt``, ``--text-encoder``, ``--with-text-encoder``), the smoke test encodes once
per command, before any diffusion model is on the device, and frees the encoder again
(``del`` + ``gc`` + ``empty_cache``) so the diffusion model's load time and peak VRAM are measured
exactly as without it; ``bench`` gives every variant the same conditioning. What each family
receives mirrors diffusers (``ZImagePipeline``, ``FluxPipeline``, ``Flux2Pipeline``,
``Flux2KleinPipeline``) and ComfyUI's templates:

* Z-Image — Qwen3 on the chat template (one user turn, generation prompt), the hidden states
  before the last layer (``hidden_states[-2]``), the prompt's own tokens only;
* FLUX.1 — T5's last hidden state over 512 tokens (padded) and CLIP-L's pooled vector (77 tokens);
* FLUX.2 dev — Mistral on the FLUX.2 system prompt, 512 tokens (left-padded, as ComfyUI does),
  hidden states after layers 10, 20 and 30 side by side (3 × 5120 = 15360 wide);
* FLUX.2 klein — Qwen3 on the chat template with an empty think block, 512 tokens, hidden
  states after layers 9, 18 and 27.

Token ids come from a tokenizer when one is found (tokens.py), else are seeded; an explicit
``--prompt`` without a tokenizer is an error rather than a silent substitution.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import NotFoundError, UsageError
from .. import deps
from ..sampler import Conditioning
from . import tokens
from .encoders import EncoderFile, load, open_encoder

DEFAULT_PROMPT = "a photograph of a red fox in fresh snow at sunrise, sharp focus, soft warm light"
"""Encoded when the text encoder is asked for without ``--prompt`` and tokenizers are found."""

FLUX2_SYSTEM = ("You are an AI that reasons about image descriptions. You give structured responses focusing on "
                "object relationships, object\nattribution and actions without speculation.")
"""diffusers' ``flux2/system_messages.py::SYSTEM_MESSAGE`` (BFL's), line break included."""


@dataclass(frozen=True)
class Use:
    """How one encoder is fed and read for one family (diffusers' ``_get_*_prompt_embeds``)."""

    kind: str
    output: str
    """``text`` (last hidden state), ``pooled`` (CLIP's pooled vector) or ``layers``."""
    template: str = "{}"
    """The prompt as the family's chat template renders one user turn."""
    prefix: tuple[int, ...] = ()
    """Ids before the templated text (Mistral's BOS, which the template writes as ``<s>``)."""
    special: bool = True
    """Let the tokenizer add its own BOS/EOS (CLIP, T5); chat templates carry theirs as text."""
    length: int = 512
    """Tokens at most; padded to exactly this many when ``pad``."""
    pad: bool = True
    pad_id: int = 0
    """Padding id; negative counts from the end of the vocabulary (CLIP pads with its EOS)."""
    pad_left: bool = False
    layers: tuple[int, ...] = ()
    """``hidden_states`` indices read for ``layers`` (negative: from the end), stacked side by side."""

    def indices(self, enc: EncoderFile) -> list[int]:
        """The hidden-state indices as positive numbers (0 = embeddings, N = after the last layer)."""
        return [i if i >= 0 else enc.layers + 1 + i for i in self.layers]

    def depth(self, enc: EncoderFile) -> int:
        """Layers to build: an index below the last is read before the final norm, so the layers
        after the deepest one read are never needed."""
        wanted = self.indices(enc)
        if not wanted:
            return enc.layers
        if max(wanted) > enc.layers or min(wanted) < 0:
            shown = ", ".join(str(i) for i in self.layers)
            raise UsageError(f"{enc.name} has {enc.layers} layers; this model reads its hidden states {shown}",
                             "give the text encoder that belongs to this model")
        return min(enc.layers, max(wanted) + 1)


QWEN_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
RECIPES: dict[str, tuple[Use, ...]] = {
    "flux1": (Use("t5", "text"), Use("clip", "pooled", length=77, pad_id=-1)),
    "z-image": (Use("qwen3", "layers", template=QWEN_TEMPLATE, special=False, pad=False, layers=(-2,)),),
    "flux2": (Use("mistral", "layers", template="[SYSTEM_PROMPT]" + FLUX2_SYSTEM + "[/SYSTEM_PROMPT][INST]{}[/INST]",
                  prefix=(1,), special=False, pad_id=11, pad_left=True, layers=(10, 20, 30)),),
    "flux2-klein": (Use("qwen3", "layers", template=QWEN_TEMPLATE + "<think>\n\n</think>\n\n", special=False,
                        pad_id=151643, layers=(9, 18, 27)),),
}
"""Per family, the encoders it needs and how each is used (module docstring)."""

NAMES = {"flux1": "FLUX.1", "flux2": "FLUX.2", "flux2-klein": "FLUX.2 klein", "z-image": "Z-Image"}
NEEDS = {"flux1": "clip_l + t5xxl", "z-image": "Qwen3 (qwen_3_4b)", "flux2": "Mistral-Small-3 or Qwen3 (klein)"}


def provider(targets: list):
    """The target whose text encoders condition the run: the first that has any (bench uses one
    set for every variant, so that only the diffusion model differs)."""
    for target in targets:
        if target.text_encoders or target.missing_text_encoders:
            return target
    first = targets[0]
    raise UsageError(f"{first.label}: no text encoder to condition with",
                     "give --text-encoder PATH (twice for FLUX.1: clip_l and t5xxl), or run a bundle")


def family_of(path: Path) -> str:
    """The diffusion model's family from its header, as arch.detect decides it."""
    from ..arch import smoke_family
    from ..reader import open_model

    model = open_model(path)
    return smoke_family(model.inspection.family, {e.name for e in model.header.tensors}) or ""


def recipe(family: str, encoders: list[EncoderFile]) -> list[tuple[EncoderFile, Use]]:
    """Each encoder paired with its use for ``family``; UsageError for the wrong set of files."""
    kinds = sorted(e.kind for e in encoders)
    key = "flux2-klein" if family == "flux2" and kinds == ["qwen3"] else family
    if key not in RECIPES:
        raise UsageError(f"text conditioning covers FLUX.1, FLUX.2 and Z-Image; this model is {family or 'unknown'}")
    uses = RECIPES[key]
    if kinds != sorted(u.kind for u in uses):
        got = " + ".join(f"{e.name} ({e.kind})" for e in encoders)
        raise UsageError(f"{NAMES.get(family, family)} needs the text encoder(s) {NEEDS[family]}; got {got}")
    return [(next(e for e in encoders if e.kind == u.kind), u) for u in uses]


def encode(targets: list, *, seed: int, prompt: str | None, tokenizers: tuple[Path, ...], device: str) -> Conditioning:
    """The conditioning from the text encoder(s) of the first target that has them (module docstring).

    Returns it on the CPU in float32; ``Conditioning.to`` puts it in each variant's dtype.
    """
    torch = deps.torch("the text encoder")
    deps.transformers("the text encoder")
    target = provider(targets)
    if target.missing_text_encoders:
        bundle = target.bundle.name if target.bundle else target.label
        raise NotFoundError(f"{bundle}: text encoder {', '.join(target.missing_text_encoders)} is not installed",
                            f"modelmgr pull bundle {bundle}")
    pairs = recipe(family_of(target.path), [open_encoder(p) for p in target.text_encoders])
    found: dict = {}
    tokenizers_of = {enc.name: tokens.find(enc, list(tokenizers), found) for enc, _ in pairs}
    lacking = {name: why for name, (tok, why) in tokenizers_of.items() if tok is None}
    if prompt is not None and lacking:
        name, why = next(iter(lacking.items()))
        raise UsageError(f"--prompt needs a tokenizer for {name}, and none was found ({why})",
                         "give --tokenizer DIR (a folder with tokenizer.json or spiece.model), or drop --prompt "
                         "to encode seeded token ids")
    text = prompt if prompt is not None else (None if lacking else DEFAULT_PROMPT)
    # every check before the first (possibly 10 GB) load: ids in the vocabulary, layers deep enough
    jobs = [(enc, use, _ids(enc, use, text, tokenizers_of[enc.name][0], seed), use.depth(enc)) for enc, use in pairs]
    outputs: dict[str, object] = {}
    load_s = encode_s = 0.0
    for enc, use, ids, depth in jobs:  # one encoder on the device at a time
        loaded = load(enc, device, depth)
        load_s += loaded.seconds
        started = _now(device)
        outputs[use.output] = _run(loaded.module, enc, use, ids, device).float().cpu()
        encode_s += _now(device) - started
        del loaded
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    text_out = outputs.get("text", outputs.get("layers"))
    source = _describe([e for e, _ in pairs], text, prompt is None, tokenizers_of, lacking, seed,
                       [len(ids) for _, _, ids, _ in jobs])
    return Conditioning(text_out, outputs.get("pooled"), source, load_s=load_s, encode_s=encode_s)


def _now(device: str) -> float:
    if device.startswith("cuda"):
        deps.torch().cuda.synchronize(device)
    return time.perf_counter()


def _ids(enc: EncoderFile, use: Use, text: str | None, tokenizer, seed: int) -> list[int]:
    """Template, tokenize (or seed), truncate, pad: the ids the encoder runs on."""
    if text is None:
        ids = tokens.seeded_ids(enc, seed)
    else:
        ids = tokenizer.encode(use.template.format(text), use.special)
    ids = [*use.prefix, *ids]
    if len(ids) > use.length:  # keep the closing EOS the encoder reads its pooled vector at
        ids = ids[: use.length - 1] + ids[-1:] if use.special else ids[: use.length]
    bad = [i for i in ids if not 0 <= i < enc.vocab]
    if bad:
        raise UsageError(f"{enc.name}: token id {bad[0]} is outside its {enc.vocab}-token vocabulary",
                         "give the tokenizer that belongs to this text encoder")
    return ids


def _run(module, enc: EncoderFile, use: Use, ids: list[int], device: str):
    torch = deps.torch()
    pad = use.pad_id if use.pad_id >= 0 else enc.vocab + use.pad_id
    pad = pad if pad < enc.vocab else 0  # a vocabulary smaller than the real one (tests)
    fill = use.length - len(ids) if use.pad else 0
    mask = [1] * len(ids)
    if use.pad_left:
        ids, mask = [pad] * fill + ids, [0] * fill + mask
    else:
        ids, mask = ids + [pad] * fill, mask + [0] * fill
    input_ids = torch.tensor([ids], device=device)
    with torch.inference_mode():
        if use.output == "text":  # T5: no attention mask, as FluxPipeline calls it
            return module(input_ids=input_ids).last_hidden_state
        if use.output == "pooled":
            return module(input_ids=input_ids).pooler_output
        out = module(input_ids=input_ids, attention_mask=torch.tensor([mask], device=device),
                     output_hidden_states=True, use_cache=False)
        states = [out.hidden_states[i] for i in use.indices(enc)]
        return torch.cat(states, dim=-1)  # = diffusers' stack(dim=1).permute(0, 2, 1, 3).reshape


def _describe(encoders: list[EncoderFile], text: str | None, default: bool, tokenizers_of: dict,
              lacking: dict, seed: int, counts: list[int]) -> str:
    names = " + ".join(e.name for e in encoders)
    if text is None:
        which = "" if len(lacking) == len(encoders) else " for " + ", ".join(lacking)
        return f"{names} on {tokens.SEEDED_TOKENS} seeded token ids (seed {seed}; no tokenizer{which}: " \
               "give --tokenizer DIR)"
    shown = text if len(text) <= 60 else text[:57] + "..."
    sources = list(dict.fromkeys(tok.source for tok, _ in tokenizers_of.values()))
    what = "default prompt" if default else "prompt"
    return f"{names} on the {what} \"{shown}\" ({'/'.join(str(c) for c in counts)} tokens; " \
           f"tokenizer{'s' if len(sources) > 1 else ''}: {', '.join(sources)})"
