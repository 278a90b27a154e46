"""PNG encoding with the standard library (zlib), so images need no Pillow.

Used for the smoke test's saved image and for the bench report, which inlines every image as a
base64 ``data:`` URI so the HTML file is self-contained.
"""

from __future__ import annotations

import base64
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(pixels: bytes, width: int, height: int) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``width * 3`` bytes."""
    row = width * 3
    if len(pixels) != row * height:
        raise ValueError(f"{len(pixels)} bytes is not {width}x{height} RGB")
    raw = b"".join(b"\x00" + pixels[y * row : (y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def from_tensor(image) -> bytes:
    """PNG bytes of an ``[H, W, 3]`` uint8 torch tensor."""
    height, width, _ = image.shape
    return encode(image.contiguous().numpy().tobytes() if hasattr(image, "numpy") else bytes(image), width, height)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
