"""The one gate for remote names, Content-Disposition parsing and URL redaction."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from modelmgr.download.safe_paths import (filename_from_content_disposition, redact_url,
                                          safe_join, safe_relpath)
from modelmgr.errors import UnsafePathError


@pytest.mark.parametrize("name", [
    "", "/etc/passwd", "../x", "a/../../x", "a/./b", "..", ".", "C:evil", "C:\\evil",
    "\\\\server\\share\\x", "a\\b", "x\x00y", "x\ny", "x\x1b[31m", "CON", "nul.txt", "a/aux/b",
    "file:stream", "trailing.", "trailing ", "a" * 256, "x/" * 3000,
])
def test_rejected(name):
    with pytest.raises(UnsafePathError):
        safe_relpath(name)


@pytest.mark.parametrize("name,expected", [
    ("model.safetensors", "model.safetensors"),
    ("split_files/vae/ae.safetensors", "split_files/vae/ae.safetensors"),
    ("a//b/", "a/b"),
    ("ünïcode model.gguf", "ünïcode model.gguf"),
])
def test_accepted(name, expected):
    assert safe_relpath(name) == expected


def test_single_component_mode():
    with pytest.raises(UnsafePathError):
        safe_relpath("dir/file", allow_dirs=False)


@given(st.text(max_size=200))
def test_never_escapes(tmp_path_factory, name):
    root = tmp_path_factory.getbasetemp() / "root"
    try:
        path = safe_join(root, name)
    except UnsafePathError:
        return
    assert root.resolve() in path.parents


def test_symlink_escape_is_caught(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        safe_join(root, "link/outside.bin")


@pytest.mark.parametrize("header,name", [
    ('attachment; filename="flux.safetensors"', "flux.safetensors"),
    ("attachment; filename=plain.gguf", "plain.gguf"),
    ("inline; filename*=UTF-8''z%C3%BCrich.safetensors; filename=\"x\"", "zürich.safetensors"),
    ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),  # parsed, then rejected
    (None, None), ("attachment", None),
])
def test_content_disposition(header, name):
    assert filename_from_content_disposition(header) == name


def test_redact_url_hides_tokens_and_userinfo():
    url = "https://user:pw@civitai.com/api/download/models/1?token=abc&type=Model&X-Amz-Signature=s"
    shown = redact_url(url)
    assert "abc" not in shown and "pw" not in shown and "=s" not in shown
    assert "type=Model" in shown
