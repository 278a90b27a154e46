"""The thin file layer: tell the container from its first bytes, then read only the header.

Nothing here maps the file or reads tensor data at large:

* the first 16 bytes decide the container (magic numbers first, the name's extension second);
* safetensors: exactly ``8 + N`` bytes are read once ``N`` has been checked;
* GGUF: the header is read in growing chunks (64 KiB, then doubling, capped by the parser's
  header limit and the file size), so at most one chunk past the header's end is ever read;
* pickle checkpoints (``.ckpt .pt .pth .bin``, zip ``PK\\x03\\x04`` torch archives, raw pickle
  ``\\x80`` protocol bytes) are never read past those 16 bytes, let alone unpickled;
* :func:`range_reader` serves the few small targeted reads classification may ask for (the
  ``comfy_quant`` JSON of each quantized layer).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from .gguf import DEFAULT_LIMITS, parse_gguf
from .model import ParsedHeader
from .problems import NeedMore, bad, shown
from .safetensors import MAX_HEADER_SIZE, parse_safetensors

SNIFF_BYTES = 16
GGUF_FIRST_CHUNK = 64 * 1024
PICKLE_EXTENSIONS = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
SAFETENSORS_EXTENSIONS = frozenset({".safetensors", ".sft"})
_ZIP_MAGIC = b"PK\x03\x04"

Parser = Callable[[bytes, int, str], ParsedHeader]
PARSERS: dict[str, Parser] = {"safetensors": parse_safetensors, "gguf": parse_gguf}


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack_from("<Q", head, 0)
    return 2 <= n <= MAX_HEADER_SIZE and head[8:9] == b"{"


def pickle_container(head: bytes) -> str | None:
    """``zip`` (torch archive) or ``pickle`` (raw protocol 2-5 stream) from the magic, else None."""
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def sniff(head: bytes, file_size: int, name: str) -> str:
    """``safetensors``, ``gguf`` or ``pickle``: the content decides, the extension only breaks ties.

    A mislabelled file (safetensors bytes in ``x.gguf``) is reported as what it is; the declared
    format check then flags the mismatch.
    """
    if file_size == 0:
        raise bad(name, "file is empty", "download the file again")
    ext = os.path.splitext(name)[1].lower()
    if head[:4] in (b"GGUF", b"FUGG"):
        return "gguf"
    if _looks_like_safetensors(head):
        return "safetensors"
    if pickle_container(head) is not None:
        return "pickle"
    # Content matched nothing: trust the extension so that the parser says precisely what is wrong.
    if ext == ".gguf":
        return "gguf"
    if ext in SAFETENSORS_EXTENSIONS:
        return "safetensors"
    if ext in PICKLE_EXTENSIONS:
        return "pickle"
    raise bad(name, f"not a safetensors, GGUF or pickle file (starts with {shown(bytes(head[:8]))})")


def read_exact(f: BinaryIO, offset: int, length: int, name: str) -> bytes:
    """``length`` bytes at ``offset``; a short read means the file changed under us."""
    f.seek(offset)
    chunks: list[bytes] = []
    left = length
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            raise bad(name, f"file ended at byte {length - left + offset} while reading it (was it modified?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_header(f: BinaryIO, file_size: int, head: bytes, kind: str, name: str) -> ParsedHeader:
    """Parse the header, reading more of the file only when the parser asks (bounded)."""
    parse = PARSERS[kind]
    data = head
    while True:
        try:
            return parse(data, file_size, name)
        except NeedMore as more:
            want = more.end
            if kind == "gguf":
                grown = min(max(2 * len(data), GGUF_FIRST_CHUNK), file_size, DEFAULT_LIMITS.max_header_bytes)
                want = max(want, grown)
            data += read_exact(f, len(data), want - len(data), name)


def range_reader(f: BinaryIO, file_size: int, name: str) -> Callable[[int, int], bytes | None]:
    """A reader for small targeted reads inside the file (never past its end)."""

    def read(offset: int, length: int) -> bytes | None:
        if offset < 0 or offset + length > file_size:
            return None
        return read_exact(f, offset, length, name)

    return read
