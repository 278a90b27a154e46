"""Reading bundle YAML: validated at the edge, with file, line and field in every error.

The YAML is composed into nodes (not straight into Python objects) so each complaint can point at
the line it is about. Unknown keys are errors too: a typo such as ``sha265`` must not silently
drop a pin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import yaml

from ..download.safe_paths import safe_relpath
from ..errors import ConfigError, ModelMgrError
from ..library.layout import canonical_folder
from ..registry.inspect import DECLARED_FORMATS, is_declared_format
from .model import (FAMILIES, PRECISIONS, ROLES, Bundle, BundleFile, Expected, SourceSpec,
                    parse_source)

NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
RESOLUTION = re.compile(r"^(\d+)x(\d+)$")


class BundleError(ConfigError):
    """A bundle file breaks the schema (bundles/README.md)."""


class _Node:
    """A YAML node plus where it is, with typed accessors that raise ``fail()``'s error
    (BundleError here; the daemon config subclasses this and overrides ``fail``)."""

    def __init__(self, node: yaml.Node, path: Path, field: str) -> None:
        self.node, self.path, self.field = node, path, field

    def fail(self, problem: str) -> BundleError:
        line = self.node.start_mark.line + 1
        return BundleError(f"{self.path}:{line}: {self.field}: {problem}",
                           "see bundles/README.md for the bundle schema")

    def value(self) -> Any:
        return yaml.SafeLoader("").construct_object(self.node, deep=True)

    def mapping(self, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, "_Node"]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("must be a mapping")
        items: dict[str, _Node] = {}
        for key_node, value_node in self.node.value:
            key = key_node.value
            where = f"{self.field}.{key}" if self.field else key
            if key in items:
                raise type(self)(key_node, self.path, where).fail("appears twice")
            if key not in required and key not in optional:
                allowed = ", ".join(required + optional)
                raise type(self)(key_node, self.path, where).fail(
                    f"unknown field (allowed: {allowed})")
            items[key] = type(self)(value_node, self.path, where)
        missing = [k for k in required if k not in items]
        if missing:
            raise self.fail(f"missing required field {missing[0]!r}")
        return items

    def sequence(self) -> list["_Node"]:
        if not isinstance(self.node, yaml.SequenceNode) or not self.node.value:
            raise self.fail("must be a non-empty list")
        return [type(self)(n, self.path, f"{self.field}[{i}]")
                for i, n in enumerate(self.node.value)]

    def text(self, pattern: re.Pattern | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.value()
        if not isinstance(value, str) or not value.strip():
            raise self.fail("must be a non-empty string")
        if choices and value not in choices:
            raise self.fail(f"{value!r} is not one of {', '.join(choices)}")
        if pattern and not pattern.match(value):
            raise self.fail(f"{value!r} is not valid (expected {pattern.pattern})")
        return value

    def number(self, kind: Callable[[Any], Any], low: float = 0) -> Any:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise self.fail(f"must be a number >= {low}")
        return kind(value)

    def flag(self) -> bool:
        value = self.value()
        if not isinstance(value, bool):
            raise self.fail("must be true or false")
        return value


def compose_yaml(text: str, path: Path, error: type[ConfigError]) -> yaml.Node | None:
    """The YAML node tree of ``text``; ``error`` with file and line when it is not YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise error(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}",
                    "fix the YAML syntax") from None


def load_bundle(path: Path, text: str | None = None) -> Bundle:
    """Parse and validate one bundle file."""
    text = path.read_text(encoding="utf-8") if text is None else text
    root = compose_yaml(text, path, BundleError)
    if root is None:
        raise BundleError(f"{path}: the file is empty")
    top = _Node(root, path, "").mapping(
        ("name", "title", "family", "precision", "licence", "gated", "files"),
        ("description", "licence_url", "expected"))
    name = top["name"].text(NAME)
    if path.suffix in (".yaml", ".yml") and name != path.stem:
        raise top["name"].fail(f"must match the file name ({path.stem})")
    files = tuple(_bundle_file(n) for n in top["files"].sequence())
    seen: dict[str, _Node] = {}
    for node, f in zip(top["files"].sequence(), files):
        if f.relpath in seen:
            raise node.fail(f"{f.relpath} appears twice in this bundle")
        seen[f.relpath] = node
    expected = tuple(_expected(n) for n in top["expected"].sequence()) if "expected" in top else ()
    return Bundle(name=name, title=top["title"].text(), family=top["family"].text(choices=FAMILIES),
                  precision=top["precision"].text(choices=PRECISIONS),
                  licence=top["licence"].text(), gated=top["gated"].flag(), files=files,
                  expected=expected,
                  description=top["description"].text() if "description" in top else "",
                  licence_url=top["licence_url"].text() if "licence_url" in top else None,
                  origin=str(path))


def _bundle_file(node: _Node) -> BundleFile:
    f = node.mapping(("role", "source", "folder", "format"),
                     ("filename", "size", "sha256", "family", "gated"))
    try:
        source: SourceSpec = parse_source(f["source"].text())
    except ModelMgrError as exc:
        raise f["source"].fail(exc.message) from None
    if source.kind == "hf":
        try:
            safe_relpath(source.path or "")
        except ModelMgrError as exc:
            raise f["source"].fail(exc.message) from None
    sha256 = f["sha256"].text(HEX64) if "sha256" in f else None
    if source.kind == "hf" and not source.pinned_commit and sha256 is None:
        raise f["source"].fail("revision is not a 40-hex commit; pin it or give sha256")
    if source.kind == "url" and sha256 is None:
        raise f["source"].fail("url: sources need a sha256")
    folder = canonical_folder(f["folder"].text())
    if folder is None:
        raise f["folder"].fail("not a ComfyUI model folder (diffusion_models, text_encoders, "
                               "vae, loras, checkpoints; unet and clip are aliases)")
    filename = f["filename"].text() if "filename" in f else source.basename
    try:
        filename = safe_relpath(filename, allow_dirs=False)
    except ModelMgrError as exc:
        raise (f["filename"] if "filename" in f else f["source"]).fail(exc.message) from None
    fmt = f["format"].text()
    if not is_declared_format(fmt):
        raise f["format"].fail(f"{fmt!r} is not a known format ({', '.join(DECLARED_FORMATS)})")
    return BundleFile(role=f["role"].text(choices=ROLES), source=source, folder=folder,
                      filename=filename, format=fmt,
                      size=f["size"].number(int, 1) if "size" in f else None, sha256=sha256,
                      family=f["family"].text() if "family" in f else None,
                      gated=f["gated"].flag() if "gated" in f else False)


def _expected(node: _Node) -> Expected:
    e = node.mapping(("gpu", "resolution", "steps", "it_s"), ("tolerance", "source"))
    m = RESOLUTION.match(str(e["resolution"].value()))
    if not m:
        raise e["resolution"].fail("must look like 1536x1536")
    tolerance = e["tolerance"].number(float) if "tolerance" in e else 0.15
    if tolerance >= 1:
        raise e["tolerance"].fail("is a fraction below 1 (0.15 = 15 %)")
    return Expected(gpu=e["gpu"].text(), width=int(m.group(1)), height=int(m.group(2)),
                    steps=e["steps"].number(int, 1), it_s=e["it_s"].number(float),
                    tolerance=tolerance, source=e["source"].text() if "source" in e else "")
