"""Verdicts against a bundle's references, defaults taken from them, targets resolved from a
bundle / a recorded asset / a file, and results stored on the registry asset."""

from __future__ import annotations

import shutil

import pytest

from modelmgr.catalogue.model import Expected
from modelmgr.errors import NotFoundError
from modelmgr.smoke.results import FAIL, NO_REFERENCE, PASS, SmokeResult, default_settings, judge
from tests.smoke.tiny import bundle_yaml

RTX = Expected("NVIDIA GeForce RTX 5090", 1536, 1536, 8, 4.23, 0.15, "published")
H100 = Expected("NVIDIA H100 80GB HBM3", 1536, 1536, 8, 2.6, 0.15, "user")


def _result(it_s: float, gpu: str = "NVIDIA H100 80GB HBM3", size: int = 1536, finite: bool = True) -> SmokeResult:
    return SmokeResult(file="x", precision="bf16", family="z-image", device={"name": gpu, "is_gpu": True},
                       width=size, height=size, steps=8, seed=0, it_s=it_s, finite=finite)


def test_only_the_same_gpu_at_the_same_resolution_counts():
    verdict, reason, ref = judge(_result(2.7), (RTX,), True)
    assert verdict == NO_REFERENCE and "NVIDIA GeForce RTX 5090" in reason and ref is None
    assert judge(_result(2.7), (RTX, H100), True)[0] == PASS
    assert judge(_result(2.22), (RTX, H100), True)[0] == PASS  # 2.6 − 15 % = 2.21
    verdict, reason, _ = judge(_result(2.0), (RTX, H100), True)
    assert verdict == FAIL and "2.00 it/s < 2.21" in reason
    verdict, reason, _ = judge(_result(9.0, size=1024), (H100,), True)
    assert verdict == NO_REFERENCE and "1536x1536" in reason
    assert judge(_result(9.0, gpu="nvidia  h100 80gb hbm3"), (H100,), True)[0] == PASS
    assert judge(_result(9.0, finite=False), (H100,), True)[0] == FAIL
    assert judge(_result(9.0), (H100,), False)[0] == NO_REFERENCE
    assert judge(_result(9.0), (), True)[0] == NO_REFERENCE


def test_defaults_follow_this_gpus_reference_else_the_first():
    other = Expected("NVIDIA H100 80GB HBM3", 1024, 1024, 4, 6.0)
    assert default_settings((RTX, other), "NVIDIA H100 80GB HBM3") == (1024, 1024, 4)
    assert default_settings((RTX,), "NVIDIA H100 80GB HBM3") == (1536, 1536, 8)
    assert default_settings((), "x") is None


def _bundle(name: str, filename: str, extra: str = "") -> str:
    expected = ('expected:\n  - gpu: "NVIDIA GeForce RTX 5090"\n    resolution: 1536x1536\n    steps: 8\n'
                "    it_s: 4.23\n")
    files = (("diffusion_model", filename, "diffusion_models", "bf16"), ("vae", "ae.safetensors", "vae", "fp32"))
    return bundle_yaml(name, files, expected + extra)


def test_targets_from_a_bundle_an_asset_and_a_file(models, tmp_path):
    pytest.importorskip("torch")
    from modelmgr.service import ModelManager
    from modelmgr.settings import Settings
    from modelmgr.smoke.targets import record, resolve

    root = tmp_path / "models"
    (root / "diffusion_models").mkdir(parents=True)
    (root / "vae").mkdir()
    shutil.copy(models["z-image"], root / "diffusion_models" / "tiny.safetensors")
    shutil.copy(models["flux1-vae"], root / "vae" / "ae.safetensors")
    bundles = root / ".modelmgr" / "bundles"
    bundles.mkdir(parents=True)
    h100 = '  - gpu: "NVIDIA H100 80GB HBM3"\n    resolution: 1024x1024\n    steps: 8\n    it_s: 6.0\n'
    (bundles / "bf16-tiny.yaml").write_text(_bundle("bf16-tiny", "tiny.safetensors", h100))
    (bundles / "bf16-missing.yaml").write_text(_bundle("bf16-missing", "absent.safetensors"))
    manager = ModelManager(Settings.from_env({}, models_root=str(root)))
    try:
        target = resolve(manager, "bf16-tiny")
        assert target.path == root / "diffusion_models" / "tiny.safetensors" and target.vae == root / "vae" / "ae.safetensors"
        assert [r.gpu for r in target.references] == ["NVIDIA GeForce RTX 5090", "NVIDIA H100 80GB HBM3"]
        assert target.asset is None and not record(manager, target, {"device": {"name": "cpu"}})
        with pytest.raises(NotFoundError, match="modelmgr pull bundle bf16-missing"):
            resolve(manager, "bf16-missing")
        with pytest.raises(NotFoundError):
            resolve(manager, "bf16-tiyn")

        manager.scan()
        target = resolve(manager, "diffusion_models/tiny.safetensors")
        assert target.asset == "diffusion_models/tiny.safetensors"
        assert record(manager, target, {"device": {"name": "cpu"}, "it_s": 1.5})
        assert record(manager, target, {"device": {"name": "gpu"}, "it_s": 9.0})
        smoke = manager.library.registry.get("diffusion_models/tiny.safetensors").smoke
        assert smoke["latest"]["it_s"] == 9.0 and set(smoke["by_device"]) == {"cpu", "gpu"}
        assert resolve(manager, str(root / "diffusion_models" / "tiny.safetensors")).asset == target.asset
        assert resolve(manager, str(models["flux1"])).asset is None
    finally:
        manager.close()
