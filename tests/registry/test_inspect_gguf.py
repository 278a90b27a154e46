"""GGUF header parsing on files written by gguf-py, and on hand-built broken headers."""

from __future__ import annotations

import logging
import struct

import gguf
import pytest

from modelmgr.errors import BadFileError
from modelmgr.registry.inspect import files, inspect_file, inspect_header_bytes
from tests.fixtures.model_files import (
    flux1_layout,
    gguf_bytes,
    gguf_kv,
    gguf_str,
    gguf_string,
    gguf_tensor_info,
    gguf_u32,
    simple_gguf,
    write_gguf,
)

logging.getLogger("gguf").setLevel(logging.ERROR)


def _error(data: bytes, name: str = "m.gguf") -> str:
    with pytest.raises(BadFileError) as info:
        inspect_header_bytes(data, len(data), name)
    assert "\n" not in info.value.message and info.value.message.startswith(f"{name}: ")
    return info.value.message


@pytest.mark.parametrize("qtype", ["Q8_0", "F16", "BF16", "Q4_K", "Q6_K"])
def test_writer_files_match_gguf_py(tmp_path, qtype):
    layout = flux1_layout(hidden=256)
    path = write_gguf(tmp_path / f"m-{qtype}.gguf", layout, "flux", qtype)
    ins = inspect_file(path)
    reader = gguf.GGUFReader(str(path))
    assert ins.tensor_count == len(reader.tensors) == len(layout)
    assert ins.header_size == reader.data_offset
    assert ins.param_count == sum(int(t.n_elements) for t in reader.tensors)
    assert sum(ins.dtype_bytes.values()) == sum(int(t.n_bytes) for t in reader.tensors)
    assert ins.precision == f"gguf-{qtype.lower()}"
    assert ins.metadata["general.architecture"] == "flux"


def test_torch_shapes_and_comfy_orig_shape(tmp_path):
    layout = {"img_in.weight": flux1_layout()["img_in.weight"], "pad": flux1_layout()["img_in.bias"]}
    path = write_gguf(tmp_path / "s.gguf", layout, "flux", "F32", kv=[("comfy.gguf.orig_shape.pad", [1, 64])])
    from modelmgr.registry.inspect.gguf import parse_gguf

    parsed = parse_gguf(path.read_bytes(), path.stat().st_size, "s.gguf")
    shapes = {t.name: t.shape for t in parsed.tensors}
    assert shapes == {"img_in.weight": (64, 64), "pad": (1, 64)}


def test_big_endian_files_are_refused_clearly(tmp_path):
    path = write_gguf(tmp_path / "be.gguf", {"w.weight": flux1_layout()["img_in.weight"]}, "flux", "F32",
                      big_endian=True)
    with pytest.raises(BadFileError, match="big-endian GGUF is not supported"):
        inspect_file(path)


def test_large_metadata_is_read_incrementally_and_bounded(tmp_path, monkeypatch):
    vocab = [f"token{i}" for i in range(200_000)]
    layout = {"token_embd.weight": flux1_layout()["img_in.weight"]}
    path = write_gguf(tmp_path / "te.gguf", layout, "qwen3", "F32", kv=[("tokenizer.ggml.tokens", vocab)])
    reads: list[tuple[int, int]] = []
    real = files.read_exact

    def spy(f, offset, length, name):
        reads.append((offset, length))
        return real(f, offset, length, name)

    monkeypatch.setattr(files, "read_exact", spy)
    ins = inspect_file(path)
    assert ins.header_size > 2_000_000 and len(reads) > 3
    last = max(offset + length for offset, length in reads)
    assert last <= 2 * ins.header_size  # never the tensor data at large
    assert ins.family == "qwen3" and ins.role == "text_encoder"


def test_gguf_cases():
    arch = gguf_str("general.architecture", "flux")
    ok = simple_gguf()
    assert inspect_header_bytes(ok, len(ok)).precision == "gguf-q8_0"
    q8 = gguf_tensor_info("w", (32, 4), 8, 0)
    data = bytes(160)
    assert "bad magic" in _error(b"GGUX" + ok[4:])
    assert "big-endian" in _error(b"FUGG" + ok[4:])
    assert "version 1 is not supported" in _error(ok[:4] + struct.pack("<I", 1) + ok[8:])
    assert "absurd tensor count" in _error(gguf_bytes([arch], [q8], data, tensor_count=2**62))
    assert "absurd metadata count" in _error(gguf_bytes([arch], [q8], data, kv_count=2**64 - 1))
    assert "exceeds the 16777216-byte limit" in _error(gguf_bytes([gguf_kv("s", 8, struct.pack("<Q", 2**60))], [], b""))
    assert "unknown GGML type id 99" in _error(gguf_bytes([arch], [gguf_tensor_info("w", (32, 4), 99, 0)], data))
    assert "not a multiple of the alignment" in _error(gguf_bytes([arch], [gguf_tensor_info("w", (32, 4), 8, 8)], data))
    assert "runs past the end" in _error(gguf_bytes([arch], [q8], data[:100]))
    two = [q8, gguf_tensor_info("v", (32, 4), 8, 128)]
    assert "overlaps" in _error(gguf_bytes([arch], two, data * 2))
    assert "appears twice" in _error(gguf_bytes([arch], [q8, q8], data * 2))
    assert "appears twice" in _error(gguf_bytes([arch, arch], [q8], data))
    assert "not a power of two" in _error(gguf_bytes([arch, gguf_u32("general.alignment", 24)], [q8], data))
    assert "9 dimensions" in _error(gguf_bytes([arch], [gguf_tensor_info("w", (32,) + (1,) * 8, 8, 0)], data))
    nested = gguf_kv("a", 9, struct.pack("<IQ", 9, 1) * 4 + struct.pack("<IQ", 0, 0))
    assert "nested more than 4 deep" in _error(gguf_bytes([nested], [], b""))
    assert "not a multiple of the Q8_0 block size" in _error(
        gguf_bytes([arch], [gguf_tensor_info("w", (48, 4), 8, 0)], data))


def test_wide_tensors_and_trailing_bytes_only_warn():
    arch = gguf_str("general.architecture", "flux")
    info = gguf_tensor_info("w.weight", (2, 1, 1, 1, 2), 0, 0)
    data = gguf_bytes([arch], [info], bytes(16) + bytes(100))
    ins = inspect_header_bytes(data, len(data))
    assert any("more than 4 dimensions" in w for w in ins.warnings)
    assert any("after the last tensor" in w for w in ins.warnings)


def test_array_strings_are_walked_not_trusted():
    strings = gguf_kv("a", 9, struct.pack("<IQ", 8, 3) + gguf_string("x") + gguf_string("yy") + struct.pack("<Q", 99))
    message = _error(gguf_bytes([strings], [], b""))
    assert "runs past the end" in message
