"""The package as users install it: the wheel carries every module and the bundles, and the core
imports and runs without the optional extras (torch, textual, diffusers, transformers)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"modelmgr_bundles": "bundles", "modelmgr_tui": "tui"}


def declared_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"]


def test_every_package_folder_is_declared():
    found = {".".join(p.relative_to(ROOT).parent.parts)
             for p in (ROOT / "modelmgr").rglob("__init__.py")}
    for name, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py") if (ROOT / folder).is_dir() else []:
            rest = init.relative_to(ROOT / folder).parent.parts
            found.add(".".join((name, *rest)))
    assert found == set(declared_packages())


def test_wheel_carries_modules_and_bundles(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(ROOT), "-w", str(tmp_path)], check=True, cwd=tmp_path)
    [wheel] = list(tmp_path.glob("modelmgr-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "bundles").glob("*.yaml")}
    assert shipped and all(f"modelmgr_bundles/{n}" in names for n in shipped)
    assert "modelmgr/download/engine.py" in names
    assert "modelmgr_tui/app.tcss" in names  # the TUI's stylesheet is package data
    assert not any(n.startswith("tests/") for n in names)


BLOCK_EXTRAS = """
import sys
for name in ("torch", "textual", "diffusers", "transformers", "safetensors", "gguf", "numpy"):
    sys.modules[name] = None  # importing any of them now fails
import modelmgr.service, modelmgr.cli.app, modelmgr.registry.inspect, modelmgr.library.install
from modelmgr.cli.app import main
sys.argv = ["modelmgr", "bundles", "list", "--json"]
main()
"""


def test_core_runs_without_optional_extras(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "MODELMGR_ROOT": str(tmp_path),
                               "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert '"bundles"' in proc.stdout
