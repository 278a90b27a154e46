"""The file layer: container sniffing, pickle files, bounded reads, and the package's contract."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from modelmgr.errors import BadFileError
from modelmgr.registry.inspect import files, inspect_file, inspect_header_bytes
from tests.fixtures.model_files import (
    comfy_quant,
    edge_layers_bf16,
    flux1_layout,
    save_numpy,
    simple_gguf,
    write_any,
    write_safetensors,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def reads(monkeypatch):
    """Every (offset, length) the file layer reads after the first 16 bytes."""
    seen: list[tuple[int, int]] = []
    real = files.read_exact

    def spy(f, offset, length, name):
        seen.append((offset, length))
        return real(f, offset, length, name)

    monkeypatch.setattr(files, "read_exact", spy)
    return seen


def _torch_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/data/0", bytes(64))
    return path


@pytest.mark.parametrize(("name", "make", "container"), [
    ("model.ckpt", lambda p: _torch_zip(p), "zip"),
    ("model.safetensors", lambda p: _torch_zip(p), "zip"),   # mislabelled: the content decides
    ("pytorch_model.bin", lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4)), "pickle"),
    ("weights.pth", lambda p: p.write_bytes(b"\x00\x01 not even a pickle" * 10), "unknown"),
])
def test_pickle_files_are_reported_unsafe_and_never_read(tmp_path, reads, name, make, container):
    path = tmp_path / name
    make(path)
    ins = inspect_file(path)
    assert (ins.format, ins.unsafe, ins.precision) == ("pickle", True, "unknown")
    assert ins.metadata == {"container": container}
    assert "arbitrary code" in ins.warnings[0]
    assert reads == []  # nothing past the 16 sniffed bytes


def test_safetensors_reads_exactly_the_header(tmp_path, reads):
    path = write_any(tmp_path / "m.safetensors", flux1_layout())
    ins = inspect_file(path)
    assert reads == [(16, ins.header_size - 16)]


def test_comfy_quant_reads_are_small_and_targeted(tmp_path, reads):
    layout, _ = comfy_quant(flux1_layout(), edge_layers_bf16("nvfp4"))
    path = write_any(tmp_path / "m.safetensors", layout)
    ins = inspect_file(path)
    tail = reads[1:]
    assert len(tail) == ins.quant_layers["nvfp4"] and all(length <= 4096 for _, length in tail)
    assert sum(length for _, length in tail) < 1000


def test_content_decides_over_extension(tmp_path):
    data = simple_gguf()
    (tmp_path / "x.safetensors").write_bytes(data)
    assert inspect_file(tmp_path / "x.safetensors").format == "gguf"
    write_any(tmp_path / "y.gguf", flux1_layout())
    assert inspect_file(tmp_path / "y.gguf").format == "safetensors"
    (tmp_path / "z.gguf").write_bytes(b"\x00" * 64)
    with pytest.raises(BadFileError, match="not a GGUF file"):
        inspect_file(tmp_path / "z.gguf")


@pytest.mark.parametrize(("setup", "expected"), [
    (lambda p: p.write_bytes(b""), "file is empty"),
    (lambda p: p.write_bytes(b"hello world, not a model"), "not a safetensors, GGUF or pickle file"),
    (lambda p: p.mkdir(), "cannot read the file|not a regular file"),
    (lambda p: None, "cannot read the file"),
])
def test_unreadable_or_unknown_files(tmp_path, setup, expected):
    path = tmp_path / "thing"
    setup(path)
    with pytest.raises(BadFileError, match=expected) as info:
        inspect_file(path)
    assert "\n" not in info.value.message and "thing" in info.value.message


def test_unexpected_parser_failures_become_bad_file_errors(tmp_path, monkeypatch):
    path = write_any(tmp_path / "m.safetensors", flux1_layout())

    def broken(*args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("modelmgr.registry.inspect.detect_family", broken)
    with pytest.raises(BadFileError, match="unexpected ZeroDivisionError"):
        inspect_file(path)
    data = path.read_bytes()
    with pytest.raises(BadFileError, match="unexpected ZeroDivisionError"):
        inspect_header_bytes(data, len(data))


def test_header_bytes_must_be_complete_and_consistent(tmp_path):
    data = write_any(tmp_path / "m.safetensors", flux1_layout()).read_bytes()
    with pytest.raises(BadFileError, match="only 100 bytes were given"):
        inspect_header_bytes(data[:100], len(data))
    with pytest.raises(BadFileError, match="bytes given for a file of"):
        inspect_header_bytes(data, 10)


def test_to_dict_is_json(tmp_path):
    path = save_numpy(tmp_path / "m.safetensors", {"a.weight": flux1_layout(dtype="F16")["img_in.weight"]},
                      {"note": "x" * 5000})
    out = json.loads(json.dumps(inspect_file(path).to_dict()))
    assert out["format"] == "safetensors" and out["warnings"] == [] and len(out["metadata"]["note"]) == 1024


def test_metadata_is_bounded(tmp_path):
    meta = {f"key{i}": str(i) for i in range(100)}
    path = write_safetensors(tmp_path / "m.safetensors", flux1_layout(), meta)
    assert len(inspect_file(path).metadata) == 64


def test_core_imports_without_numpy_safetensors_gguf_or_torch(tmp_path):
    path = write_any(tmp_path / "m.safetensors", flux1_layout())
    code = (
        "import sys\n"
        "for m in ('numpy', 'torch', 'safetensors', 'gguf'): sys.modules[m] = None\n"
        "from modelmgr.registry.inspect import inspect_file\n"
        f"print(inspect_file({str(path)!r}).family)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "flux1"
