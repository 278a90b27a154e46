"""Bundle YAML validation (file, line, field in every error), the shipped catalogue, overrides,
ComfyUI's extra_model_paths.yaml, and the registry under concurrent writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from modelmgr.catalogue.catalogue import Catalogue
from modelmgr.catalogue.loader import BundleError, load_bundle
from modelmgr.library.layout import extra_model_paths_yaml, merge_extra_model_paths
from modelmgr.registry.store import Asset, Registry
from modelmgr.settings import Settings

GOOD = textwrap.dedent("""\
    name: fp8-demo
    title: Demo
    family: flux1
    precision: fp8-scaled
    licence: apache-2.0
    gated: false
    files:
      - role: diffusion_model
        source: "hf:org/repo@0123456789abcdef0123456789abcdef01234567/dm/demo.safetensors"
        folder: unet
        format: fp8-scaled
      - role: vae
        source: "url:https://example.invalid/ae.safetensors"
        folder: vae
        sha256: "%s"
        format: bf16
    expected:
      - gpu: NVIDIA H100 80GB HBM3
        resolution: 1024x1024
        steps: 8
        it_s: 6.2
    """) % ("a" * 64)


def write(tmp_path: Path, text: str, name: str = "fp8-demo") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_good_bundle_parses(tmp_path):
    bundle = load_bundle(write(tmp_path, GOOD))
    assert bundle.files[0].folder == "diffusion_models"  # unet is an alias
    assert bundle.files[0].relpath == "diffusion_models/demo.safetensors"
    assert bundle.files[0].source.pinned_commit
    assert bundle.expected[0].width == 1024 and bundle.expected[0].tolerance == 0.15


@pytest.mark.parametrize("old,new,line,field", [
    ("family: flux1", "family: sdxl", 3, "family"),
    ("    folder: unet", "    folder: models", 10, "files[0].folder"),
    ("    format: fp8-scaled", "    format: int3", 11, "files[0].format"),
    ("@0123456789abcdef0123456789abcdef01234567/", "@main/", 9, "files[0].source"),
    ("    sha256: \"" + "a" * 64 + "\"", "    sha265: x", 15, "files[1].sha265"),
    ("  - role: vae", "  - role: upscaler", 12, "files[1].role"),
    ("    resolution: 1024x1024", "    resolution: big", 19, "expected[0].resolution"),
    ("gated: false", "gated: sometimes", 6, "gated"),
    ("name: fp8-demo", "name: other", 1, "name"),
    ("demo.safetensors", "../evil.safetensors", 9, "files[0].source"),
])
def test_schema_errors_name_file_line_and_field(tmp_path, old, new, line, field):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert err.value.message.startswith(f"{path}:{line}: {field}: "), err.value.message


def test_missing_field_and_bad_yaml(tmp_path):
    with pytest.raises(BundleError, match="missing required field 'licence'"):
        load_bundle(write(tmp_path, GOOD.replace("licence: apache-2.0\n", "")))
    with pytest.raises(BundleError, match=r":2: not valid YAML"):
        load_bundle(write(tmp_path, "name: x\n  bad: [\n"))


def test_shipped_catalogue_is_valid_and_user_folder_overrides(tmp_path):
    settings = Settings.from_env({}, models_root=str(tmp_path / "root"))
    shipped = Catalogue.load(settings)
    assert shipped.errors == {}
    for bundle in shipped.all():
        assert bundle.files and all(f.source.pinned_commit or f.sha256 for f in bundle.files)
        assert bundle.name.split("-", 1)[0] in ("bf16", "fp8", "q8", "nvfp4", "fp16")
    user = tmp_path / "mine"
    user.mkdir()
    write(user, GOOD)
    write(user, "name: broken\n", "broken")
    cat = Catalogue.load(Settings.from_env({}, models_root=str(tmp_path / "root"),
                                           bundles_dir=str(user)))
    assert cat.get("fp8-demo").title == "Demo"
    with pytest.raises(BundleError):
        cat.get("broken")


COMFY_LOADER = """
import os, sys, yaml
# ComfyUI's utils/extra_config.py logic: every key but base_path/is_default is a folder type whose
# value holds one path per line, joined to base_path
paths = {}
config = yaml.safe_load(open(sys.argv[1]))
for section in config.values():
    base = os.path.expandvars(os.path.expanduser(section.pop("base_path")))
    section.pop("is_default", None)
    for kind, value in section.items():
        for line in value.split("\\n"):
            if line.strip():
                paths.setdefault(kind, []).append(os.path.normpath(os.path.join(base, line.strip())))
for kind in sorted(paths):
    print(kind, *paths[kind])
"""


def test_extra_model_paths_yaml_reads_like_comfyui_reads_it(tmp_path):
    root = tmp_path / "my models"
    target = tmp_path / "extra_model_paths.yaml"
    target.write_text("comfyui:\n    base_path: /opt/ComfyUI\n    loras: models/loras\n")
    target.write_text(merge_extra_model_paths(target.read_text(), extra_model_paths_yaml(root)))
    out = subprocess.run([sys.executable, "-c", COMFY_LOADER, str(target)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    table = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out}
    assert table["diffusion_models"] == f"{root}/diffusion_models {root}/unet"
    assert table["text_encoders"] == f"{root}/text_encoders {root}/clip"
    assert table["vae"] == f"{root}/vae"
    assert table["loras"] == f"/opt/ComfyUI/models/loras {root}/loras"
    assert yaml.safe_load(target.read_text())["comfyui"]["base_path"] == "/opt/ComfyUI"


WRITER = """
import sys
from modelmgr.registry.store import Asset, Registry
reg = Registry(sys.argv[1])
for i in range(200):
    reg.upsert(Asset(path=f"loras/{sys.argv[2]}-{i}.safetensors", size=i, mtime_ns=i))
    reg.record_bundle(f"b{sys.argv[2]}", [(f"loras/{sys.argv[2]}-{i}.safetensors", "lora")])
"""


def test_registry_takes_concurrent_writers(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)],
                              env=dict(os.environ)) for n in range(3)]
    reader = Registry(tmp_path)
    while any(p.poll() is None for p in procs):
        reader.assets()  # reads never block on the writers (WAL)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert len(reader.assets("loras")) == 600
    assert reader.get("loras/1-7.safetensors") == reader.get("loras/1-7.safetensors")
    assert reader.bundles_using("loras/2-199.safetensors") == ["b2"]
    reader.upsert(Asset(path="vae/x.safetensors", size=1, mtime_ns=1, inspection={"a": 1}))
    assert reader.get("vae/x.safetensors").inspection == {"a": 1}
