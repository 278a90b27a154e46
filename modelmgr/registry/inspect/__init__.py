"""Header-only inspection of model files: what a file is, proven without loading a tensor.

``inspect_file`` reads a safetensors or GGUF header (never the tensor data at large, never a
pickle), validates it by the reference readers' rules, and reports an :class:`Inspection`:
container, precision class, quantized layers, parameter count, model family, variant and role.
``check_declared`` then compares that with what a bundle claims.

Modules: ``safetensors`` and ``gguf`` (pure parsers over bytes, with limits), ``files`` (the thin
layer that reads only header bytes), ``classify`` (precision), ``families`` (family/role),
``declared`` (the declared-format vocabulary and check), ``model`` (the value objects).

Every problem surfaces as a one-line :class:`~modelmgr.errors.BadFileError` naming the file; an
unexpected exception inside a parser is converted too, so a scan never crashes on a bad file.
This package needs only the standard library: numpy, torch, safetensors and gguf are never imported.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from ...errors import BadFileError
from .classify import classify as classify_header  # aliased: `classify` stays the submodule
from .declared import DECLARED_FORMATS, check_declared, is_declared_format
from .families import detect_family
from .files import PARSERS, SNIFF_BYTES, pickle_container, range_reader, read_exact, read_header, sniff
from .model import Inspection, ParsedHeader
from .problems import NeedMore, bad

__all__ = ["DECLARED_FORMATS", "Inspection", "check_declared", "inspect_file", "inspect_header_bytes",
           "is_declared_format"]

_META_ENTRIES = 64
_META_KEY_CHARS = 128
_META_VALUE_CHARS = 1024


def inspect_file(path: str | os.PathLike[str]) -> Inspection:
    """Inspect a model file from its header. Raises BadFileError for anything malformed."""
    where = os.fspath(path)
    name = os.path.basename(where) or where
    try:
        with open(where, "rb", buffering=0) as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise bad(name, "not a regular file")
            size = info.st_size
            head = read_exact(f, 0, min(size, SNIFF_BYTES), name)
            kind = sniff(head, size, name)
            if kind == "pickle":
                return _pickle_inspection(where, size, head)
            parsed = read_header(f, size, head, kind, name)
            return _assemble(parsed, where, size, range_reader(f, size, name), name)
    except BadFileError:
        raise
    except OSError as err:
        raise bad(name, f"cannot read the file ({err.strerror or err})") from None
    except Exception as err:  # a parser bug must not crash a scan: report it as this file's problem
        raise _unexpected(name, err) from err


def inspect_header_bytes(data: bytes, file_size: int, name: str = "<bytes>") -> Inspection:
    """Inspect a file from its first bytes (at least the whole header) and its total size.

    Pure: no IO. ``comfy_quant`` formats are read from ``data`` when it reaches that far, and
    inferred from dtypes otherwise. Raises BadFileError for anything malformed or incomplete.
    """
    try:
        return _inspect_bytes(data, file_size, name)
    except BadFileError:
        raise
    except Exception as err:  # same contract as inspect_file
        raise _unexpected(name, err) from err


def _inspect_bytes(data: bytes, file_size: int, name: str) -> Inspection:
    """:func:`inspect_header_bytes` without the safety net; the fuzzer calls this to find bugs."""
    if len(data) > file_size:
        raise bad(name, f"{len(data)} bytes given for a file of {file_size} bytes")
    head = bytes(data[:SNIFF_BYTES])
    kind = sniff(head, file_size, name)
    if kind == "pickle":
        return _pickle_inspection(None, file_size, head)
    try:
        parsed = PARSERS[kind](data, file_size, name)
    except NeedMore as more:
        raise bad(name, f"the header continues to byte {more.end}, but only {len(data)} bytes were given") from None

    def read_range(offset: int, length: int) -> bytes | None:
        return bytes(data[offset : offset + length]) if 0 <= offset and offset + length <= len(data) else None

    return _assemble(parsed, None, file_size, read_range, name)


def _unexpected(name: str, err: Exception) -> BadFileError:
    return bad(name, f"could not be inspected: unexpected {type(err).__name__} ({str(err)[:100]})",
               "this is a modelmgr bug worth reporting, with the file's first bytes")


def _assemble(parsed: ParsedHeader, path: str | None, size: int,
              read_range: Callable[[int, int], bytes | None], name: str) -> Inspection:
    report = classify_header(parsed, read_range, name)
    guess = detect_family(parsed)
    return Inspection(
        path=path, format=parsed.format, file_size=size, header_size=parsed.header_size,
        tensor_count=len(parsed.tensors), param_count=report.param_count, dtype_bytes=report.dtype_bytes,
        precision=report.precision, quant_layers=report.quant_layers, family=guess.family,
        variant=guess.variant, role=guess.role, unsafe=False,
        warnings=parsed.warnings + report.warnings + guess.warnings, metadata=_selected_metadata(parsed),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _selected_metadata(parsed: ParsedHeader) -> dict[str, str]:
    """safetensors ``__metadata__`` or GGUF ``general.*`` scalars, as bounded strings."""
    if parsed.format == "gguf":
        items = ((k, v) for k, v in parsed.kv.items() if k.startswith("general.") or k == "GGUF.version")
    else:
        items = iter(parsed.kv.items())
    out: dict[str, str] = {}
    for key, value in items:
        if len(out) >= _META_ENTRIES:
            break
        out[_cut(key, _META_KEY_CHARS)] = _cut(str(value), _META_VALUE_CHARS)
    return out


def _pickle_inspection(path: str | None, size: int, head: bytes) -> Inspection:
    container = pickle_container(head) or "unknown"
    return Inspection(
        path=path, format="pickle", file_size=size, header_size=0, tensor_count=0, param_count=0,
        dtype_bytes={}, precision="unknown", quant_layers={}, family=None, variant=None, role="unknown",
        unsafe=True,
        warnings=("pickle checkpoint: loading it can run arbitrary code, so modelmgr never opens it; "
                  "prefer a .safetensors or .gguf version",),
        metadata={"container": container},
    )
