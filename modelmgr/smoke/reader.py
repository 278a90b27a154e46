"""Tensor bytes from a model file straight to the device, by the offsets the inspector found.

The inspector has already validated the header (safetensors or GGUF) and knows where every tensor
lies, so loading needs no second parser and no safetensors/gguf package: the data section is read
once with positional reads into pinned staging buffers and copied to the GPU on side streams by a
few threads, so disk (or page cache) reads and host-to-device copies overlap. Each tensor is then
a typed *view* of one device buffer, so the file's bytes are on the device exactly once.

GGUF quantized tensors stay raw bytes, one row per output feature (``[rows, row_bytes]``), which
is what the on-device dequantizers take. ``iter_tensors`` serves the quantizer, which streams one
tensor at a time instead.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadFileError
from ..registry.inspect import Inspection, inspect_file
from ..registry.inspect.files import SNIFF_BYTES, read_exact, read_header, sniff
from ..registry.inspect.gguf import GGML_TYPES
from ..registry.inspect.model import ParsedHeader, TensorEntry
from . import deps

ALIGN = 16
CHUNK_BYTES = 64 << 20
READ_THREADS = 4

_TORCH_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "U8": "uint8", "I8": "int8", "I16": "int16",
    "I32": "int32", "I64": "int64", "BOOL": "bool", "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
"""safetensors dtype strings (and GGUF's plain types, which use the same names) → torch dtype names."""


@dataclass(frozen=True)
class ModelFile:
    """A model file as the loader sees it: what the inspector concluded plus every tensor's place."""

    path: Path
    inspection: Inspection
    header: ParsedHeader

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_gguf(self) -> bool:
        return self.header.format == "gguf"


@dataclass(frozen=True)
class LoadStats:
    """How fast the bytes reached the device."""

    bytes: int
    seconds: float

    @property
    def gb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    """Inspect and parse a model file (headers only); BadFileError for anything that is not loadable."""
    where = Path(path)
    inspection = inspect_file(where)
    if inspection.unsafe or inspection.format == "pickle":
        raise BadFileError(f"{where.name}: pickle checkpoint; modelmgr never loads pickles",
                           "use a .safetensors or .gguf version of this model")
    with open(where, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = read_exact(f, 0, min(size, SNIFF_BYTES), where.name)
        header = read_header(f, size, head, sniff(head, size, where.name), where.name)
    return ModelFile(where, inspection, header)


def torch_dtype(dtype: str):
    """The torch dtype of a stored dtype string, or None for packed/quantized storage (raw bytes)."""
    torch = deps.torch()
    name = _TORCH_DTYPES.get(dtype)
    return getattr(torch, name, None) if name else None


def typed(raw, entry: TensorEntry, is_gguf: bool):
    """A 1-D uint8 tensor holding ``entry``'s bytes, viewed as what it stores.

    Plain dtypes get their torch dtype and shape; GGUF quantized types become ``[rows, row_bytes]``
    uint8 (rows = every dimension but the last). A tensor that does not start 16-byte aligned (a
    writer that put a 4-byte scale or a JSON string before it) is copied to an aligned place:
    cuBLAS refuses unaligned FP8 operands and runs slower kernels on unaligned BF16 ones.
    """
    if raw.numel() and raw.data_ptr() % ALIGN:
        raw = raw.clone()
    dtype = torch_dtype(entry.dtype)
    if dtype is None:
        if not is_gguf or entry.dtype not in _GGML_BLOCKS:
            raise BadFileError(f"tensor {entry.name!r} has dtype {entry.dtype}, which the smoke test cannot load")
        block, size = _GGML_BLOCKS[entry.dtype]
        cols = entry.shape[-1] if entry.shape else 1
        return raw.view(-1, cols // block * size)
    return raw.view(dtype).view(entry.shape)


_GGML_BLOCKS = {name: (block, size) for name, block, size in GGML_TYPES.values()}


def load_all(model: ModelFile, device: str) -> tuple[dict, LoadStats]:
    """Every tensor of the file on ``device`` as ``{name: typed tensor}``, and the transfer speed."""
    torch = deps.torch()
    entries = model.header.tensors
    if not entries:
        raise BadFileError(f"{model.name}: the file holds no tensors")
    start = min(e.start for e in entries)
    end = max(e.start + e.nbytes for e in entries)
    started = time.perf_counter()
    buf = torch.empty(end - start, dtype=torch.uint8, device=device)
    with open(model.path, "rb", buffering=0) as f:
        if buf.is_cuda:
            _read_to_gpu(f.fileno(), start, buf)
        else:
            _read_to_cpu(f.fileno(), start, buf)
    stats = LoadStats(end - start, time.perf_counter() - started)
    out = {e.name: typed(buf[e.start - start : e.start - start + e.nbytes], e, model.is_gguf) for e in entries}
    return out, stats


def iter_tensors(model: ModelFile, device: str) -> Iterator[tuple[TensorEntry, object]]:
    """One tensor at a time (the quantizer's stream): never more than one tensor in memory."""
    torch = deps.torch()
    with open(model.path, "rb", buffering=0) as f:
        for entry in model.header.tensors:
            raw = torch.empty(entry.nbytes, dtype=torch.uint8)
            _pread_into(f.fileno(), raw, entry.start)
            yield entry, typed(raw.to(device), entry, model.is_gguf)


def byte_view(tensor) -> memoryview:
    """A writable memoryview over a contiguous CPU uint8 tensor (no numpy needed)."""
    return memoryview((ctypes.c_char * tensor.numel()).from_address(tensor.data_ptr())).cast("B")


def _pread_into(fd: int, tensor, offset: int) -> None:
    view = byte_view(tensor)
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise BadFileError(f"the file ended {len(view) - done} bytes early while loading (was it modified?)")
        done += got


def _chunks(total: int) -> list[tuple[int, int]]:
    return [(off, min(CHUNK_BYTES, total - off)) for off in range(0, total, CHUNK_BYTES)]


def _run_threads(work, count: int) -> None:
    """Run ``work(k)`` in ``count`` threads and re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _read_to_cpu(fd: int, start: int, buf) -> None:
    chunks = _chunks(buf.numel())

    def work(k: int) -> None:
        for off, n in chunks[k::READ_THREADS]:
            _pread_into(fd, buf[off : off + n], start + off)

    _run_threads(work, min(READ_THREADS, len(chunks)))


def _read_to_gpu(fd: int, start: int, buf) -> None:
    """Positional reads into pinned buffers, each copied on its thread's own stream (overlapped)."""
    torch = deps.torch()
    chunks = _chunks(buf.numel())
    threads = min(READ_THREADS, len(chunks))
    device = buf.device

    def work(k: int) -> None:
        staging = [torch.empty(CHUNK_BYTES, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        done = [None, None]
        stream = torch.cuda.Stream(device)
        for i, (off, n) in enumerate(chunks[k::threads]):
            slot = i % 2
            if done[slot] is not None:
                done[slot].synchronize()
            host = staging[slot][:n]
            _pread_into(fd, host, start + off)
            with torch.cuda.stream(stream):
                buf[off : off + n].copy_(host, non_blocking=True)
                done[slot] = stream.record_event()
        stream.synchronize()

    _run_threads(work, threads)
