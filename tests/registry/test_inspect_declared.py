"""check_declared: the file must be the format (and family) its bundle claims."""

from __future__ import annotations

import logging

import pytest

from modelmgr.errors import BadFileError, UsageError
from modelmgr.registry.inspect import DECLARED_FORMATS, check_declared, inspect_file, is_declared_format
from tests.fixtures.model_files import (
    as_dtype,
    comfy_quant,
    edge_layers_bf16,
    flux1_layout,
    fp8_scaled,
    write_any,
    write_gguf,
)

logging.getLogger("gguf").setLevel(logging.ERROR)

BASE = flux1_layout()
FILES = {
    "bf16": lambda p: write_any(p / "a.safetensors", BASE),
    "fp16": lambda p: write_any(p / "a.safetensors", as_dtype(BASE, "F16")),
    "fp8-e4m3fn": lambda p: write_any(p / "a.safetensors", as_dtype(BASE, "BF16", "F8_E4M3")),
    "fp8-scaled": lambda p: write_any(p / "a.safetensors", fp8_scaled(BASE)),
    "fp8-mixed": lambda p: write_any(p / "a.safetensors", *comfy_quant(BASE, edge_layers_bf16("float8_e4m3fn"))),
    "nvfp4": lambda p: write_any(p / "a.safetensors", *comfy_quant(BASE, edge_layers_bf16("nvfp4"))),
    "mxfp8": lambda p: write_any(p / "a.safetensors", *comfy_quant(BASE, edge_layers_bf16("mxfp8"))),
    "gguf-q8_0": lambda p: write_gguf(p / "a.gguf", flux1_layout(hidden=64), "flux", "Q8_0"),
}
ACCEPTS = {
    "bf16": {"bf16", "safetensors"},
    "fp16": {"fp16", "safetensors"},
    "fp8-e4m3fn": {"fp8", "fp8-e4m3fn", "safetensors"},
    "fp8-scaled": {"fp8", "fp8-scaled", "safetensors"},
    "fp8-mixed": {"fp8", "fp8-scaled", "fp8-mixed", "safetensors"},
    "nvfp4": {"nvfp4", "safetensors"},
    "mxfp8": {"mxfp8", "safetensors"},
    "gguf-q8_0": {"gguf-q8_0", "gguf"},
}
DECLARED = ["bf16", "fp16", "fp32", "fp8", "fp8-e4m3fn", "fp8-e5m2", "fp8-scaled", "fp8-mixed", "nvfp4", "mxfp8",
            "gguf-q8_0", "gguf-q4_k", "safetensors", "gguf"]


@pytest.mark.parametrize("content", list(FILES))
def test_declared_format_matrix(tmp_path, content):
    ins = inspect_file(FILES[content](tmp_path))
    for declared in DECLARED:
        if declared in ACCEPTS[content]:
            check_declared(ins, declared)
        else:
            with pytest.raises(BadFileError) as info:
                check_declared(ins, declared)
            message = info.value.message
            assert f"declared {declared}" in message and ins.precision in message and "\n" not in message


def test_family_check(tmp_path):
    ins = inspect_file(FILES["bf16"](tmp_path))
    for ok in ("flux1", "flux1:dev", "flux1:kontext"):
        check_declared(ins, "bf16", ok)
    for wrong in ("flux2", "flux1:schnell", "z-image"):
        with pytest.raises(BadFileError, match=f"declared family {wrong}, but the tensors are flux1:dev"):
            check_declared(ins, "bf16", wrong)


def test_pickle_matches_nothing(tmp_path):
    path = tmp_path / "m.ckpt"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    ins = inspect_file(path)
    with pytest.raises(BadFileError, match="a pickle checkpoint"):
        check_declared(ins, "safetensors")


def test_vocabulary(tmp_path):
    assert all(is_declared_format(d) for d in DECLARED)
    assert not is_declared_format("gguf-q9_9") and not is_declared_format("fp4")
    assert "gguf-<type>" in DECLARED_FORMATS
    with pytest.raises(UsageError, match="unknown declared format 'fp4'"):
        check_declared(inspect_file(FILES["bf16"](tmp_path)), "fp4")
