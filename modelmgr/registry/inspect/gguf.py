"""GGUF header parser: magic, metadata, tensor infos and their placement, over bytes, with limits.

Layout (ggml ``docs/gguf.md``, formats.md §2): ``"GGUF"``, u32 version (2 or 3), u64 tensor
count, u64 metadata count, the key/values, the tensor infos (name, dims in ``ne`` order, GGML
type, offset), then the data section at the next multiple of ``general.alignment`` (default 32).

gguf-py checks less than a validator must (formats.md §2.4): here every tensor must also start on
the alignment, be exactly ``n_elements / block_size × type_size`` bytes with ``ne[0]`` divisible
by the block size, lie inside the file, and not overlap another. Every count and length read from
the file is checked against :class:`GGUFLimits` and against the bytes that remain *before* it is
used, so absurd values fail at once instead of driving a long loop or a huge allocation; the
whole header is bounded by ``max_header_bytes``.

The parser is pure: it raises :class:`NeedMore` when the header continues past the bytes it was
given, and the file layer reads further (bounded) and calls it again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .model import ParsedHeader, TensorEntry
from .problems import NeedMore, bad, shown

GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
"""GGML type id → (name, block size in elements, bytes per block); gguf-py's GGML_QUANT_SIZES."""

GGML_TYPE_NAMES = frozenset(name for name, _, _ in GGML_TYPES.values())

DEFAULT_ALIGNMENT = 32
_MAGIC = b"GGUF"
_MAGIC_SWAPPED = b"FUGG"
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"), 1: struct.Struct("<b"), 2: struct.Struct("<H"), 3: struct.Struct("<h"),
    4: struct.Struct("<I"), 5: struct.Struct("<i"), 6: struct.Struct("<f"), 7: struct.Struct("<?"),
    10: struct.Struct("<Q"), 11: struct.Struct("<q"), 12: struct.Struct("<d"),
}
_U32 = _SCALARS[4]
_U64 = _SCALARS[10]
_MIN_KV_BYTES = 8 + 1 + 4 + 1       # key length, one key byte, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_KEEP_ARRAY = 16                    # small numeric arrays are kept (ComfyUI-GGUF orig_shape)
_ORIG_SHAPE = "comfy.gguf.orig_shape."
_MAX_NUMEL = 2**62


@dataclass(frozen=True)
class GGUFLimits:
    """Sanity bounds on a GGUF header. Real files sit far below every one of them."""

    max_header_bytes: int = 64 * 1024 * 1024
    """Metadata plus tensor infos; a text encoder with a 256k-token vocabulary needs ~10 MiB."""
    max_kv: int = 1_000_000
    """Metadata entries."""
    max_tensors: int = 1_000_000
    """Tensor infos (FLUX.2-dev has about 1,000)."""
    max_key_bytes: int = 65_535
    """A metadata key (the spec's limit)."""
    max_name_bytes: int = 1024
    """A tensor name (the spec says 64, ComfyUI-GGUF allows 127)."""
    max_string_bytes: int = 16 * 1024 * 1024
    """One string value."""
    max_array_items: int = 64 * 1024 * 1024
    """Items in one array."""
    max_array_depth: int = 4
    """Arrays nested in arrays."""
    max_dims: int = 8
    """Dimensions of a tensor (ggml uses 4; more only warns, up to this limit)."""


DEFAULT_LIMITS = GGUFLimits()


class _Cursor:
    """Reads little-endian values from ``data``; every read is bounds-checked first."""

    __slots__ = ("data", "pos", "file_size", "limit", "name", "where")

    def __init__(self, data: bytes, file_size: int, limit: int, name: str) -> None:
        self.data = data
        self.pos = 0
        self.file_size = file_size
        self.limit = limit
        self.name = name
        self.where = "GGUF header"

    def fail(self, what: str, hint: str | None = None) -> Exception:
        return bad(self.name, f"{self.where}: {what}", hint)

    def need(self, n: int) -> None:
        end = self.pos + n
        if end > len(self.data):
            self.short(end)

    def short(self, end: int) -> None:
        """The read ending at ``end`` is beyond the given bytes: fail, or ask for more."""
        if end > self.file_size:
            raise self.fail(f"runs past the end of the {self.file_size}-byte file (truncated or corrupt)",
                            "download the file again")
        if end > self.limit:
            raise self.fail(f"the GGUF header would exceed the {self.limit}-byte limit")
        raise NeedMore(end)

    def fits(self, count: int, item_bytes: int, what: str) -> None:
        """Fail early when ``count`` items cannot possibly fit before the file or header ends."""
        room = min(self.file_size, self.limit) - self.pos
        if count * item_bytes > room:
            raise self.fail(f"{what} count {count} cannot fit in the remaining {room} bytes")

    def scalar(self, st: struct.Struct) -> Any:
        self.need(st.size)
        (value,) = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return value

    def string(self, max_bytes: int, what: str) -> str:
        n = self.scalar(_U64)
        if n > max_bytes:
            raise self.fail(f"{what} length {n} exceeds the {max_bytes}-byte limit")
        self.need(n)
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def skip_strings(self, count: int, max_bytes: int) -> None:
        """Walk an array of strings without decoding them (vocabularies have 100k+ entries)."""
        data, pos, have, unpack = self.data, self.pos, len(self.data), _U64.unpack_from
        for _ in range(count):
            if pos + 8 > have:
                self.pos = pos
                self.short(pos + 8)
            (n,) = unpack(data, pos)
            if n > max_bytes:
                self.pos = pos
                raise self.fail(f"array string length {n} exceeds the {max_bytes}-byte limit")
            pos += 8 + n
            if pos > have:
                self.pos = pos - n
                self.short(pos)
        self.pos = pos


def _value(cur: _Cursor, vtype: int, limits: GGUFLimits, depth: int) -> Any:
    """One metadata value. Arrays come back as a tuple when short and numeric, else None."""
    st = _SCALARS.get(vtype)
    if st is not None:
        return cur.scalar(st)
    if vtype == _STRING:
        return cur.string(limits.max_string_bytes, "string value")
    if vtype != _ARRAY:
        raise cur.fail(f"unknown metadata value type {vtype}")
    if depth >= limits.max_array_depth:
        raise cur.fail(f"arrays nested more than {limits.max_array_depth} deep")
    etype = cur.scalar(_U32)
    count = cur.scalar(_U64)
    if count > limits.max_array_items:
        raise cur.fail(f"array of {count} items exceeds the {limits.max_array_items}-item limit")
    est = _SCALARS.get(etype)
    if est is not None:
        cur.fits(count, est.size, "array item")
        cur.need(count * est.size)
        start = cur.pos
        cur.pos += count * est.size
        if count <= _KEEP_ARRAY:
            return tuple(v for (v,) in est.iter_unpack(cur.data[start : cur.pos]))
        return None
    if etype == _STRING:
        cur.fits(count, 8, "array string")
        cur.skip_strings(count, limits.max_string_bytes)
        return None
    if etype == _ARRAY:
        cur.fits(count, 12, "nested array")
        for _ in range(count):
            _value(cur, _ARRAY, limits, depth + 1)
        return None
    raise cur.fail(f"unknown array item type {etype}")


def _check_magic(data: bytes, file_size: int, name: str) -> int:
    if len(data) < 24 and file_size >= 24:
        raise NeedMore(24)
    if file_size < 24:
        if data[:4] not in (_MAGIC, _MAGIC_SWAPPED):
            raise bad(name, f"not a GGUF file (starts with {shown(bytes(data[:4]))})")
        raise bad(name, f"file is {file_size} bytes, too small for a GGUF header (truncated?)")
    magic = bytes(data[:4])
    (version,) = _U32.unpack_from(data, 4)
    if magic == _MAGIC_SWAPPED or (magic == _MAGIC and version and not version & 0xFFFF):
        raise bad(name, "big-endian GGUF is not supported", "use the little-endian build of this model")
    if magic != _MAGIC:
        raise bad(name, f"not a GGUF file: bad magic {shown(magic)}")
    if version not in (2, 3):
        raise bad(name, f"GGUF version {version} is not supported (only 2 and 3)")
    return version


def _alignment(cur: _Cursor, kv_types: dict[str, int], kv: dict[str, Any]) -> int:
    if "general.alignment" not in kv:
        return DEFAULT_ALIGNMENT
    value = kv["general.alignment"]
    if kv_types["general.alignment"] != _UINT32:
        raise cur.fail("general.alignment must be a uint32")
    if value <= 0 or value & (value - 1):
        raise cur.fail(f"general.alignment {value} is not a power of two")
    return value


def parse_gguf(data: bytes, file_size: int, name: str, limits: GGUFLimits = DEFAULT_LIMITS) -> ParsedHeader:
    """Validate a GGUF header. ``data`` is the file's start (any length); ``file_size`` its size.

    Raises :class:`NeedMore` when more of the header is needed, BadFileError for anything wrong.
    """
    version = _check_magic(data, file_size, name)
    cur = _Cursor(data, file_size, limits.max_header_bytes, name)
    cur.pos = 8
    tensor_count = cur.scalar(_U64)
    kv_count = cur.scalar(_U64)
    if kv_count > limits.max_kv:
        raise cur.fail(f"absurd metadata count {kv_count} (limit {limits.max_kv})")
    if tensor_count > limits.max_tensors:
        raise cur.fail(f"absurd tensor count {tensor_count} (limit {limits.max_tensors})")
    cur.fits(kv_count, _MIN_KV_BYTES, "metadata")
    cur.fits(tensor_count, _MIN_TENSOR_INFO_BYTES, "tensor")

    kv: dict[str, Any] = {"GGUF.version": version}
    kv_types: dict[str, int] = {}
    orig_shapes: dict[str, tuple[int, ...]] = {}
    for index in range(kv_count):
        cur.where = f"metadata entry {index}"
        key = cur.string(limits.max_key_bytes, "key")
        cur.where = f"metadata key {shown(key)}"
        if key in kv_types:
            raise cur.fail("appears twice")
        vtype = cur.scalar(_U32)
        value = _value(cur, vtype, limits, 0)
        kv_types[key] = vtype
        if vtype != _ARRAY:
            kv[key] = value
        elif key.startswith(_ORIG_SHAPE) and value is not None:
            orig_shapes[key[len(_ORIG_SHAPE):]] = value

    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for index in range(tensor_count):
        cur.where = f"tensor info {index}"
        tname = cur.string(limits.max_name_bytes, "tensor name")
        cur.where = f"tensor {shown(tname)}"
        n_dims = cur.scalar(_U32)
        if n_dims > limits.max_dims:
            raise cur.fail(f"{n_dims} dimensions exceed the limit of {limits.max_dims}")
        cur.need(8 * n_dims)
        ne = struct.unpack_from(f"<{n_dims}Q", cur.data, cur.pos)
        cur.pos += 8 * n_dims
        type_id = cur.scalar(_U32)
        offset = cur.scalar(_U64)
        infos.append((tname, ne, type_id, offset))

    cur.where = "GGUF header"
    alignment = _alignment(cur, kv_types, kv)
    header_end = cur.pos
    data_start = -(-header_end // alignment) * alignment
    if infos and data_start > file_size:
        raise cur.fail(f"tensor data would start at byte {data_start}, past the end of the "
                       f"{file_size}-byte file (truncated)", "download the file again")
    tensors, warnings = _place_tensors(cur, infos, data_start, alignment, orig_shapes)
    return ParsedHeader("gguf", data_start if infos else header_end, tensors, kv, warnings)


def _place_tensors(cur: _Cursor, infos: list[tuple[str, tuple[int, ...], int, int]], data_start: int,
                   alignment: int, orig_shapes: dict[str, tuple[int, ...]]
                   ) -> tuple[tuple[TensorEntry, ...], tuple[str, ...]]:
    """Check each tensor's type, size, alignment and bounds, then that no two overlap."""
    tensors: list[TensorEntry] = []
    warnings: list[str] = []
    names: set[str] = set()
    wide = 0
    for tname, ne, type_id, offset in infos:
        cur.where = f"tensor {shown(tname)}"
        if tname in names:
            raise cur.fail("appears twice")
        names.add(tname)
        gtype = GGML_TYPES.get(type_id)
        if gtype is None:
            raise cur.fail(f"unknown GGML type id {type_id}",
                           "the file may use a quantization newer than this reader knows")
        type_name, block, type_size = gtype
        numel = 1
        for dim in ne:
            numel *= dim
        if numel > _MAX_NUMEL:
            raise cur.fail(f"absurd dimensions {list(ne)}")
        row = ne[0] if ne else 1
        if row % block:
            raise cur.fail(f"row length {row} is not a multiple of the {type_name} block size {block}")
        nbytes = numel // block * type_size
        if offset % alignment:
            raise cur.fail(f"data offset {offset} is not a multiple of the alignment {alignment}")
        start = data_start + offset
        if start + nbytes > cur.file_size:
            raise cur.fail(f"data [{start}, {start + nbytes}) runs past the end of the {cur.file_size}-byte "
                           "file (truncated?)", "download the file again")
        shape = tuple(reversed(ne))
        override = orig_shapes.get(tname)
        if override is not None:
            if all(type(d) is int and d >= 0 for d in override) and _prod(override) == numel:
                shape = tuple(override)
            else:
                warnings.append(f"comfy.gguf.orig_shape for {shown(tname)} does not match its "
                                f"{numel} elements; ignored")
        wide += len(ne) > 4
        tensors.append(TensorEntry(tname, type_name, shape, start, nbytes, numel))

    cur.where = "GGUF tensor data"
    end = data_start
    for t in sorted(tensors, key=lambda t: (t.start, t.nbytes)):
        if t.start < end:
            raise cur.fail(f"tensor {shown(t.name)} at byte {t.start} overlaps the previous tensor (ends at {end})")
        end = t.start + t.nbytes
    if tensors and cur.file_size - end >= alignment:
        warnings.append(f"{cur.file_size - end} bytes after the last tensor are not part of any tensor")
    if wide:
        warnings.append(f"{wide} tensors have more than 4 dimensions; ComfyUI-GGUF needs a fix-up for them")
    return tuple(tensors), tuple(warnings)


def _prod(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
