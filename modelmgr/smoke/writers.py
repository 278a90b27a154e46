"""Streaming writers for safetensors and GGUF: the header first, then one tensor at a time.

The quantizer knows every output tensor's name, dtype and shape before it converts a single one
(they follow from the input header), so the header can be written up front and each tensor
appended as soon as it is quantized: the model is never held in memory twice. Files are written
under ``<name>.partial`` and renamed into place after an fsync, so a crash never leaves a
half-written file under the final name.

Layouts are the reference ones: safetensors ``u64 N`` + JSON (``__metadata__`` first, padded
with spaces to a multiple of 8) + the tensors back to back; GGUF v3 with its key/values, tensor
infos (dims reversed), and data aligned to 32 bytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..registry.inspect.gguf import GGML_TYPES
from ..registry.inspect.safetensors import DTYPE_BITS
from . import deps
from .reader import byte_view

GGUF_ALIGNMENT = 32
_GGML_IDS = {name: (tid, block, size) for tid, (name, block, size) in GGML_TYPES.items()}


@dataclass(frozen=True)
class Spec:
    """One output tensor: name, stored dtype (safetensors string or GGML type name), torch-order shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def safetensors_nbytes(spec: Spec) -> int:
    return spec.numel * DTYPE_BITS[spec.dtype] // 8


def gguf_nbytes(spec: Spec) -> int:
    _, block, size = _GGML_IDS[spec.dtype]
    return spec.numel // block * size


ALIGN = 16
"""Data offsets the large tensors keep: cuBLAS needs 16-byte aligned operands (FP8 matmuls fail
without it) and vector loads want it."""
DEFER_LIMIT = 1 << 20


def deferred(sizes: list[int]) -> frozenset[int]:
    """The small odd-sized tensors (scalars, JSON) a safetensors file gets *after* the others:
    then every large tensor starts 16-byte aligned, and the rest still stream in the order given."""
    return frozenset(i for i, n in enumerate(sizes) if n % ALIGN and n < DEFER_LIMIT)


class _Stream:
    """A ``.partial`` file: tensors arrive in the order of the specs and are written at once,
    except the ``held`` ones, which are kept (they are small) and written last by ``finish``."""

    padding = 0

    def __init__(self, path: Path, specs: list[Spec], sizes: list[int], held: frozenset[int] = frozenset()) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.size_of = {spec.name: size for spec, size in zip(specs, sizes)}
        order = [i for i in range(len(specs)) if i not in held] + sorted(held)
        self.streamed = [specs[i].name for i in order if i not in held]
        self.deferred = [specs[i].name for i in sorted(held)]
        self.held_names = frozenset(self.deferred)
        self.file_specs = [specs[i] for i in order]
        self.file_sizes = [sizes[i] for i in order]
        self.held: dict[str, object] = {}
        self.index = 0
        self.file = open(self.partial, "wb")

    def write(self, name: str, tensor) -> None:
        """Append ``tensor`` (any device) as the tensor called ``name``."""
        size = self.size_of.get(name)
        if size is None:
            raise RuntimeError(f"writer got {name!r}, which is not in the header")
        got = tensor.numel() * tensor.element_size()
        if got != size:
            raise RuntimeError(f"{name}: {got} bytes for a {size}-byte tensor")
        data = _as_bytes(tensor.detach().contiguous().cpu().reshape(-1))
        if name in self.held_names:
            self.held[name] = data.clone()
            return
        if self.index >= len(self.streamed) or self.streamed[self.index] != name:
            expected = self.streamed[self.index] if self.index < len(self.streamed) else "nothing"
            raise RuntimeError(f"writer got {name!r}, expected {expected!r}")
        self._emit(data, size)
        self.index += 1

    def _emit(self, data, size: int) -> None:
        if data.numel():
            self.file.write(byte_view(data))
        if self.padding:
            self.file.write(bytes(-size % self.padding))

    def finish(self) -> Path:
        missing = self.streamed[self.index:] + [n for n in self.deferred if n not in self.held]
        if missing:
            raise RuntimeError(f"{len(missing)} tensor(s) were never written (first: {missing[0]!r})")
        for name in self.deferred:
            self._emit(self.held[name], self.size_of[name])
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def _as_bytes(data):
    """The raw bytes of a contiguous CPU tensor as a uint8 tensor (a view, no copy)."""
    torch = deps.torch()
    return data.view(torch.uint8) if data.dtype != torch.bool else data.to(torch.uint8)


class SafetensorsWriter(_Stream):
    """``write(name, tensor)`` in spec order (small odd-sized tensors may come any time), then
    ``finish()``. Large tensors are kept 16-byte aligned (:func:`deferred`)."""

    def __init__(self, path: Path, specs: list[Spec], metadata: dict[str, str] | None = None) -> None:
        sizes = [safetensors_nbytes(s) for s in specs]
        super().__init__(path, specs, sizes, deferred(sizes))
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for spec, size in zip(self.file_specs, self.file_sizes):
            header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-(len(text) + 8) % ALIGN)
        self.file.write(struct.pack("<Q", len(text)) + text)


class GGUFWriter(_Stream):
    """GGUF v3: string/u32 key/values, then the tensors in spec order, each 32-byte aligned."""

    padding = GGUF_ALIGNMENT

    def __init__(self, path: Path, specs: list[Spec], kv: dict[str, str | int]) -> None:
        sizes = [gguf_nbytes(s) for s in specs]
        super().__init__(path, specs, sizes)
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(specs), len(kv)))
        for key, value in kv.items():
            out += _gguf_string(key)
            if isinstance(value, str):
                out += struct.pack("<I", 8) + _gguf_string(value)
            else:
                out += struct.pack("<II", 4, value)
        offset = 0
        for spec, size in zip(specs, sizes):
            dims = tuple(reversed(spec.shape)) or (1,)
            out += _gguf_string(spec.name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            out += struct.pack("<IQ", _GGML_IDS[spec.dtype][0], offset)
            offset += size + (-size % GGUF_ALIGNMENT)
        out += bytes(-len(out) % GGUF_ALIGNMENT)
        self.file.write(out)


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw
