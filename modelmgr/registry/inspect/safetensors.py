"""safetensors header parser: the reference reader's rules, over bytes, with no tensor data.

Layout: ``u64 LE N`` + ``N`` bytes of UTF-8 JSON + the data buffer. The checks are those of the
Rust crate's ``SafeTensors::read_metadata`` / ``Metadata::validate`` (formats.md §1.3), so a file
passes here exactly when ``safetensors.safe_open`` would accept it:

* ``N`` ≤ 100,000,000 and ``8 + N`` within the file;
* UTF-8 JSON object, no duplicate keys (Python's ``json`` would silently keep the last one);
* each tensor has a known dtype, a shape of non-negative ints and a ``[begin, end]`` pair;
* sorted by offsets, the tensors tile the buffer from 0 with no gap and no overlap, each exactly
  ``prod(shape) × bits / 8`` bytes (bits a multiple of 8: the MisalignedSlice rule);
* ``8 + N + last_end == file size``: truncated downloads and trailing garbage both fail;
* ``__metadata__`` maps strings to strings.

Dtypes the safetensors crate knows but ComfyUI's own loader does not (F4, F6_*, F8_E8M0, *FNUZ)
give a warning, not an error: the file is valid, ComfyUI just cannot load it on every path.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable

from .model import ParsedHeader, TensorEntry
from .problems import NeedMore, bad, shown

MAX_HEADER_SIZE = 100_000_000
"""The reference reader's (and ComfyUI's) limit on the JSON header length."""

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
"""Every dtype string the safetensors crate (0.8) accepts, with its width in bits."""

COMFYUI_UNLOADABLE = frozenset({"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"})
"""Dtypes missing from ComfyUI's fast safetensors loader (``comfy/utils.py`` ``_TYPES``)."""

_U64_MAX = 2**64 - 1
_LEN = struct.Struct("<Q")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def header_length(data: bytes, file_size: int, name: str) -> int:
    """The JSON header length ``N`` from the first 8 bytes, checked against the limit and file."""
    if file_size < 8 or len(data) < 8:
        raise bad(name, f"file is {file_size} bytes, too small to be safetensors (needs an 8-byte header length)")
    (n,) = _LEN.unpack_from(data, 0)
    if n > MAX_HEADER_SIZE:
        raise bad(name, f"safetensors header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit "
                        "(not a safetensors file, or a corrupt one)")
    if 8 + n > file_size:
        raise bad(name, f"safetensors header length {n} runs past the end of the {file_size}-byte file "
                        "(truncated download?)", "download the file again")
    return n


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _reject_lone_surrogates(name: str, strings: Iterable[str]) -> None:
    """``\\ud800``-style escapes decode to strings that are not Unicode; the reference rejects them."""
    for text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise bad(name, f"safetensors header has an invalid \\u escape (lone surrogate) in {shown(text)}") from None


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= _U64_MAX


def _tensor(name: str, key: str, info: object) -> tuple[str, tuple[int, ...], int, int]:
    """dtype, shape, begin, end of one header entry, with the schema checked."""
    if not isinstance(info, dict):
        raise bad(name, f"tensor {shown(key)}: header entry is not a JSON object")
    dtype = info.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(name, f"tensor {shown(key)}: unknown dtype {shown(dtype)}",
                  "the file is corrupt or needs a newer safetensors format")
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise bad(name, f"tensor {shown(key)}: shape {shown(shape)} is not a list of non-negative integers")
    offsets = info.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        raise bad(name, f"tensor {shown(key)}: data_offsets {shown(offsets)} is not a [begin, end] pair")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _metadata(name: str, value: object) -> dict[str, str]:
    if value is None:  # the reference reads it as Option<HashMap>: null means "no metadata"
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad(name, "__metadata__ must map strings to strings (numbers and nested objects are not allowed)")
    return value


def parse_safetensors(data: bytes, file_size: int, name: str) -> ParsedHeader:
    """Validate a safetensors header. ``data`` is the file's start; ``file_size`` its full size.

    Raises :class:`NeedMore` when ``data`` stops inside the header (the file layer then reads
    exactly ``8 + N`` bytes), BadFileError for anything malformed.
    """
    n = header_length(data, file_size, name)
    if len(data) < 8 + n:
        raise NeedMore(8 + n)
    try:
        text = bytes(data[8 : 8 + n]).decode("utf-8")
    except UnicodeDecodeError as err:
        raise bad(name, f"safetensors header is not valid UTF-8 (byte {err.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as err:
        raise bad(name, f"safetensors header repeats the key {shown(err.key)}") from None
    except RecursionError:
        raise bad(name, "safetensors header JSON is nested too deeply") from None
    except ValueError as err:
        raise bad(name, f"safetensors header is not valid JSON ({str(err)[:120]})") from None
    if not isinstance(header, dict):
        raise bad(name, f"safetensors header is a JSON {_JSON_TYPES.get(type(header), 'value')}, not an object")

    metadata: dict[str, str] = {}
    entries: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for key, info in header.items():
        if key == "__metadata__":
            metadata = _metadata(name, info)
            continue
        dtype, shape, begin, end = _tensor(name, key, info)
        entries.append((begin, end, key, dtype, shape))

    if "\\u" in text:  # only escapes can produce lone surrogates; skip the walk otherwise
        _reject_lone_surrogates(name, [*header, *metadata, *metadata.values()])
    entries.sort()
    tensors: list[TensorEntry] = []
    data_start = 8 + n
    expected = 0
    for begin, end, key, dtype, shape in entries:
        if end < begin or begin != expected:
            problem = "ends before it begins" if end < begin else (
                "overlaps the previous tensor" if begin < expected else "leaves a gap after the previous tensor")
            raise bad(name, f"tensor {shown(key)}: data_offsets [{begin}, {end}] {problem} "
                            "(the data buffer must be tiled exactly)")
        numel = 1
        for dim in shape:
            numel *= dim
        bits = numel * DTYPE_BITS[dtype]
        if bits > _U64_MAX:
            raise bad(name, f"tensor {shown(key)}: shape {list(shape)} overflows a 64-bit size")
        if bits % 8:
            raise bad(name, f"tensor {shown(key)}: {numel} {dtype} elements do not fill whole bytes")
        if end - begin != bits // 8:
            raise bad(name, f"tensor {shown(key)}: {dtype} {list(shape)} needs {bits // 8} bytes "
                            f"but data_offsets span {end - begin}")
        tensors.append(TensorEntry(key, dtype, shape, data_start + begin, end - begin, numel))
        expected = end

    expected_size = data_start + expected
    if expected_size > file_size:
        raise bad(name, f"file is truncated: the header describes {expected_size} bytes, the file has {file_size}",
                  "download the file again")
    if expected_size < file_size:
        raise bad(name, f"{file_size - expected_size} bytes of trailing garbage after the last tensor "
                        f"(header describes {expected_size} bytes, file has {file_size})")

    odd = sorted({t.dtype for t in tensors} & COMFYUI_UNLOADABLE)
    warnings = (f"dtypes {', '.join(odd)} are valid safetensors but ComfyUI's safetensors loader cannot load them",) \
        if odd else ()
    return ParsedHeader("safetensors", data_start, tuple(tensors), metadata, warnings)
