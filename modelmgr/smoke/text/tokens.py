"""Token ids for a text encoder: from a tokenizer when one is at hand, else seeded.

ComfyUI's text-encoder files usually carry no tokenizer (ComfyUI ships its own), and the smoke
test never downloads, so a tokenizer is looked for, in order:

1. ``--tokenizer DIR`` (repeatable): a folder with ``tokenizer.json``, or one transformers'
   ``AutoTokenizer`` reads from local files (``spiece.model``, ``vocab.json`` + ``merges.txt``);
   a diffusers pipeline folder works too (its ``tokenizer/`` and ``tokenizer_2/`` are tried). Each
   encoder takes the tokenizer whose vocabulary fits its embedding table most tightly, so one
   ``--tokenizer`` per encoder is enough for FLUX.1's CLIP + T5 pair, in any order;
2. a tokenizer the file embeds as a U8 tensor (``tokenizer_json``; ``spiece_model`` when the
   ``sentencepiece`` package is installed);
3. the local Hugging Face cache (``local_files_only``: never the network) for the tokenizer the
   family's diffusers pipeline uses (:data:`HF_CACHE`).

Without one, :func:`seeded_ids` gives deterministic ids inside the vocabulary with the special
tokens the encoder needs (CLIP's BOS/EOS, T5's EOS), which exercise the real encoder just as well
for a smoke test; the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError
from .. import deps
from .encoders import EncoderFile

SEEDED_TOKENS = 64
"""Content ids of a seeded prompt (a typical prompt's length, well inside CLIP's 77)."""

HF_CACHE = {
    "qwen3": (("Tongyi-MAI/Z-Image-Turbo", "tokenizer"), ("black-forest-labs/FLUX.2-klein-4B", "tokenizer")),
    "clip": (("black-forest-labs/FLUX.1-dev", "tokenizer"),),
    "t5": (("black-forest-labs/FLUX.1-dev", "tokenizer_2"),),
    "mistral": (("black-forest-labs/FLUX.2-dev", "tokenizer"),),
}
"""Hugging Face repo and subfolder of each encoder's tokenizer, as the diffusers pipelines load it."""

_ID_RANGE = {
    "clip": lambda rows: (0, rows - 2),  # the last two rows are <|startoftext|>, <|endoftext|>
    "t5": lambda rows: (3, min(rows, 32000)),  # 0-2: pad, </s>, <unk>; 32000+: <extra_id_N> sentinels
    "qwen3": lambda rows: (0, min(rows, 151643)),  # 151643+: <|endoftext|>, <|im_start|> … specials
    "mistral": lambda rows: (min(1000, rows // 2), rows),  # Tekken's first 1000 ids are control tokens
}


@dataclass(frozen=True)
class Tokenizer:
    """Text → ids, whatever library read it."""

    encode: Callable[[str, bool], list[int]]
    """``encode(text, add_special_tokens)``."""
    size: int
    """Vocabulary size, added tokens included."""
    source: str
    """Where it came from, for the report."""


def seeded_ids(enc: EncoderFile, seed: int, count: int = SEEDED_TOKENS) -> list[int]:
    """``count`` ids drawn from ``seed`` among the encoder's ordinary tokens, plus the special
    tokens its tokenizer would add: CLIP's BOS and EOS, T5's EOS (Mistral's BOS comes with the
    family's prompt template, Qwen3 needs none)."""
    torch = deps.torch()
    lo, hi = _ID_RANGE[enc.kind](enc.vocab)
    if hi <= lo:
        raise UsageError(f"{enc.name}: a vocabulary of {enc.vocab} tokens is too small to draw seeded ids from")
    ids = torch.randint(lo, hi, (count,), generator=torch.Generator().manual_seed(seed)).tolist()
    if enc.kind == "clip":
        return [enc.vocab - 2, *ids, enc.vocab - 1]
    if enc.kind == "t5":
        return [*ids, 1]
    return ids


def find(enc: EncoderFile, folders: list[Path], cache: dict) -> tuple[Tokenizer | None, str]:
    """The tokenizer for ``enc`` (module docstring order), or None and why each place failed.

    ``cache`` holds the ``--tokenizer`` folders already read (several encoders share them).
    """
    given = [t for t in _given(folders, cache) if t.size <= enc.vocab]
    if given:
        return min(given, key=lambda t: enc.vocab - t.size), ""
    notes = [f"no --tokenizer fits its {enc.vocab}-token vocabulary"] if folders else []
    for tensor in ("tokenizer_json", "spiece_model"):
        data = enc.embedded(tensor)
        if data is None:
            continue
        found, why = _from_blob(tensor, data)
        if found is not None and found.size <= enc.vocab:
            return found, ""
        notes.append(why or f"its embedded {tensor} has {found.size} tokens, more than the encoder's {enc.vocab}")
    if enc.embedded("tekken_model") is not None:
        notes.append("its embedded tekken_model is not readable here")
    for repo, sub in HF_CACHE[enc.kind]:
        found = _from_hf_cache(repo, sub)
        if found is not None and found.size <= enc.vocab:
            return found, ""
    notes.append("not in the local Hugging Face cache")
    return None, "; ".join(notes)


def _given(folders: list[Path], cache: dict) -> list[Tokenizer]:
    out: list[Tokenizer] = []
    for folder in folders:
        if folder not in cache:
            cache[folder] = _read_given(folder)
        out += cache[folder]
    return out


def _read_given(folder: Path) -> list[Tokenizer]:
    """Every tokenizer in a ``--tokenizer`` folder (itself, or a diffusers pipeline's subfolders)."""
    if not folder.is_dir():
        raise UsageError(f"--tokenizer {folder}: not a folder", "give a folder holding tokenizer.json or spiece.model")
    found = []
    for candidate in (folder, folder / "tokenizer", folder / "tokenizer_2"):
        try:
            tok = from_folder(candidate, f"--tokenizer {candidate}")
        except Exception as err:  # noqa: BLE001 - any library's parse error: say which folder and why
            raise UsageError(f"--tokenizer {candidate}: cannot read the tokenizer ({type(err).__name__}: "
                             f"{str(err)[:200]})") from None
        if tok is not None:
            found.append(tok)
    if not found:
        raise UsageError(f"--tokenizer {folder}: no tokenizer.json, spiece.model or vocab.json there")
    return found


def from_folder(folder: Path, source: str) -> Tokenizer | None:
    """A tokenizer from local files only, or None when the folder holds none."""
    if (folder / "tokenizer.json").is_file():
        deps.transformers("the tokenizer")
        from tokenizers import Tokenizer as Fast

        return _fast(Fast.from_file(str(folder / "tokenizer.json")), source)
    if not any((folder / f).is_file() for f in ("spiece.model", "vocab.json", "tokenizer_config.json")):
        return None
    tf = deps.transformers("the tokenizer")
    tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return Tokenizer(lambda text, special: list(tok(text, add_special_tokens=special)["input_ids"]), len(tok), source)


def _fast(tok, source: str) -> Tokenizer:
    return Tokenizer(lambda text, special: tok.encode(text, add_special_tokens=special).ids,
                     tok.get_vocab_size(with_added_tokens=True), source)


def _from_blob(tensor: str, data: bytes) -> tuple[Tokenizer | None, str]:
    source = f"embedded {tensor}"
    try:
        if tensor == "tokenizer_json":
            deps.transformers("the tokenizer")
            from tokenizers import Tokenizer as Fast

            return _fast(Fast.from_str(data.decode("utf-8")), source), ""
        spm = deps.optional("sentencepiece")
        if spm is None:
            return None, "its embedded spiece_model needs the sentencepiece package"
        proc = spm.SentencePieceProcessor(model_proto=data)
        # sentencepiece adds no EOS by itself; T5's tokenizer appends </s> (id 1)
        return Tokenizer(lambda text, special: proc.encode(text) + ([proc.eos_id()] if special else []),
                         proc.get_piece_size(), source), ""
    except Exception as err:  # noqa: BLE001 - a broken embedded tokenizer is reported, not fatal
        return None, f"its embedded {tensor} is unreadable ({type(err).__name__})"


def _from_hf_cache(repo: str, sub: str) -> Tokenizer | None:
    """The pipeline's tokenizer when a previous download left it in the local cache; no network."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("tokenizer.json", "tokenizer_config.json"):
        hit = try_to_load_from_cache(repo, f"{sub}/{name}")
        if isinstance(hit, str):
            try:
                return from_folder(Path(hit).parent, f"Hugging Face cache {repo}/{sub}")
            except Exception:  # noqa: BLE001 - a partial cache entry: look elsewhere
                return None
    return None
