"""safetensors header parsing: the reference reader's rules, checked on real files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors import safe_open

from modelmgr.errors import BadFileError
from modelmgr.registry.inspect import inspect_file, inspect_header_bytes
from tests.fixtures.model_files import (
    T,
    bad_safetensors_cases,
    safetensors_bytes,
    save_numpy,
    write_safetensors,
)


def _error(data: bytes, name: str = "m.safetensors", size: int | None = None) -> str:
    with pytest.raises(BadFileError) as info:
        inspect_header_bytes(data, len(data) if size is None else size, name)
    message = info.value.message
    assert "\n" not in message and message.startswith(f"{name}: ")
    return message


def _file(header: dict | str, data: bytes = b"") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(text.encode())) + text.encode() + data


def test_raw_writer_is_byte_identical_to_the_library(tmp_path):
    layout = {"w.weight": T("F32", (3, 4)), "a": T("U8", (5,)), "h": T("F16", (2,)), "z": T("F64", (0,)),
              "i": T("I64", (1,))}
    lib = save_numpy(tmp_path / "lib.safetensors", layout, {"k": "v"}).read_bytes()
    with safe_open(str(tmp_path / "lib.safetensors"), framework="numpy") as f:
        layout = {k: T(t.dtype, t.shape, f.get_tensor(k).tobytes()) for k, t in layout.items()}
    assert safetensors_bytes(layout, {"k": "v"}) == lib


def test_raw_writer_files_open_in_the_reference_reader(tmp_path):
    path = write_safetensors(tmp_path / "q.safetensors", {
        "a.weight": T("BF16", (4, 8)), "b.weight": T("F8_E4M3", (4, 8)), "c": T("F8_E5M2", (3,)),
        "d": T("F16", (2,), np.array([1.5, -2], np.float16).tobytes())}, {"x": "y"})
    with safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == ["a.weight", "b.weight", "c", "d"]
        assert f.metadata() == {"x": "y"}
        assert f.get_tensor("d").tolist() == [1.5, -2]
    ins = inspect_file(path)
    assert ins.tensor_count == 4
    assert ins.dtype_bytes == {"BF16": 64, "F8_E4M3": 32, "F8_E5M2": 3, "F16": 4}


def test_valid_header_is_described_exactly(tmp_path):
    path = save_numpy(tmp_path / "m.safetensors", {"x.weight": T("F32", (4, 2)), "b": T("F16", (3,))}, {"k": "v"})
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    ins = inspect_file(path)
    assert (ins.format, ins.file_size, ins.header_size) == ("safetensors", len(raw), 8 + n)
    assert (ins.tensor_count, ins.param_count, ins.precision) == (2, 11, "fp32")
    assert ins.metadata == {"k": "v"} and not ins.unsafe and ins.path == str(path)


def test_empty_tensors_scalars_and_null_metadata_are_accepted():
    data = _file({"__metadata__": None, "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
                  "e": {"dtype": "BF16", "shape": [0, 5], "data_offsets": [4, 4]}}, bytes(4))
    ins = inspect_header_bytes(data, len(data))
    assert ins.tensor_count == 2 and ins.param_count == 1 and ins.metadata == {}


def test_comfyui_unloadable_dtypes_warn_but_pass():
    data = safetensors_bytes({"a": T("F8_E8M0", (4,)), "b": T("F4", (4,)), "c.weight": T("BF16", (2, 2))})
    ins = inspect_header_bytes(data, len(data))
    assert any("F4, F8_E8M0" in w and "ComfyUI" in w for w in ins.warnings)


@pytest.mark.parametrize(("label", "data", "expected"), [
    ("truncated", safetensors_bytes({"a": T("F32", (8,))})[:-5], "file is truncated"),
    ("trailing garbage", safetensors_bytes({"a": T("F32", (8,))}) + b"junk", "4 bytes of trailing garbage"),
    ("length near 2^64", struct.pack("<Q", 2**64 - 9) + b"{}", "exceeds the 100000000-byte limit"),
    ("length past the file", struct.pack("<Q", 1000) + b"{}", "runs past the end"),
    ("too small", b"\x02\x00\x00", "too small to be safetensors"),
    ("not an object", _file("[1, 2]"), "is a JSON array, not an object"),
    ("not UTF-8", _file('{"a"}')[:9] + b"\xff" + _file('{"a"}')[10:], "not valid UTF-8"),
    ("not JSON", _file("{nope"), "not valid JSON"),
    ("duplicate key", _file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                            '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"xy"), "repeats the key 'a'"),
    ("unknown dtype", _file({"a": {"dtype": "F12", "shape": [1], "data_offsets": [0, 1]}}, b"x"),
     "unknown dtype 'F12'"),
    ("negative dim", _file({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"x"), "shape"),
    ("offsets past the end", _file({"a": {"dtype": "U8", "shape": [9], "data_offsets": [0, 9]}}, b"x"), "truncated"),
    ("overlap", _file({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                       "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"xyz"), "overlaps"),
    ("gap", _file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"xy"), "leaves a gap"),
    ("wrong size", _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"wxyz"), "needs 8 bytes"),
    ("misaligned F4", _file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"xy"), "whole bytes"),
    ("metadata not strings", _file({"__metadata__": {"n": 1}}), "__metadata__ must map strings to strings"),
    ("lone surrogate", _file('{"\\udc00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"), "lone surrogate"),
])
def test_each_bad_input_gives_a_one_line_error(label, data, expected):
    assert expected in _error(data)


def test_control_characters_in_names_stay_on_one_line():
    message = _error(_file({"evil\n\x1b[31mname": {"dtype": "F99", "shape": [], "data_offsets": [0, 0]}}))
    assert "\\n" in message and "\x1b" not in message


def test_verdicts_match_the_reference_reader(tmp_path):
    """Every corpus file the Rust reader rejects, we reject; we are stricter only on duplicate metadata keys."""
    path = tmp_path / "f.safetensors"
    for case in bad_safetensors_cases():
        path.write_bytes(case.data)
        try:
            with safe_open(str(path), framework="numpy") as f:
                list(f.keys())
            reference_ok = True
        except Exception:
            reference_ok = False
        with pytest.raises(BadFileError):
            inspect_file(path)
        assert not reference_ok or case.label == "duplicate metadata key", case.label
