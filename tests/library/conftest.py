"""A tiny real catalogue served by the loopback Hub: two bundles that share their text encoder
and VAE, and one whose diffusion model is not what it claims."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmgr.service import ModelManager
from tests.download.helpers import fast_settings
from tests.fixtures.model_files import (as_dtype, clip_layout, flux1_layout, fp8_scaled,
                                        vae_layout, write_any)
from tests.servers import HubServer

REPO = "org/tiny"


@dataclass
class World:
    hub: HubServer
    root: Path
    bundles_dir: Path
    commit: str
    files: dict[str, bytes]

    def manager(self, **kw) -> ModelManager:
        return ModelManager(fast_settings(hf_endpoint=self.hub.endpoint, models_root=str(self.root),
                                          bundles_dir=str(self.bundles_dir), **kw))

    def cdn_gets(self, name: str) -> int:
        """Data requests that reached the CDN for a repo file (by its sha256 blob path)."""
        sha = self.hub.file(REPO, name).sha256
        return sum(1 for r in self.hub.cdn.requests if r.method == "GET" and sha in r.path
                   and r.range != "bytes=0-0")


def _bytes_of(tmp: Path, name: str, layout) -> bytes:
    path = write_any(tmp / name.replace("/", "_"), layout)
    return path.read_bytes()


def bundle_yaml(name: str, commit: str, diffusion: str, fmt: str, family: str = "flux1") -> str:
    return textwrap.dedent(f"""\
        name: {name}
        title: Tiny {name}
        family: flux1
        precision: {fmt}
        licence: apache-2.0
        gated: false
        files:
          - role: diffusion_model
            source: "hf:{REPO}@{commit}/split_files/diffusion_models/{diffusion}"
            folder: diffusion_models
            format: {fmt}
            family: {family}
          - role: text_encoder
            source: "hf:{REPO}@{commit}/split_files/text_encoders/clip_l.safetensors"
            folder: text_encoders
            format: fp16
            family: clip-l
          - role: vae
            source: "hf:{REPO}@{commit}/split_files/vae/ae.safetensors"
            folder: vae
            format: bf16
            family: flux1-vae
        expected:
          - gpu: NVIDIA GeForce RTX 5090
            resolution: 1024x1024
            steps: 4
            it_s: 10.0
        """)


def tiny_files(src: Path) -> dict[str, bytes]:
    """The repo's files (real, tiny, deterministic), built in the scratch folder ``src``."""
    src.mkdir(exist_ok=True)
    dm = flux1_layout(dev=True)
    return {
        "split_files/diffusion_models/tiny_bf16.safetensors": _bytes_of(src, "bf16", dm),
        "split_files/diffusion_models/tiny_fp8_scaled.safetensors":
            _bytes_of(src, "fp8", fp8_scaled(dm)),
        "split_files/diffusion_models/tiny_liar.safetensors": _bytes_of(src, "liar", dm),
        "split_files/text_encoders/clip_l.safetensors": _bytes_of(src, "te", clip_layout()),
        "split_files/vae/ae.safetensors": _bytes_of(src, "vae",
                                                    as_dtype(vae_layout(latent=16), "BF16")),
    }


def make_world(hub: HubServer, tmp_path: Path) -> World:
    """Publish the tiny repo on ``hub`` and write the three bundles that use it."""
    files = tiny_files(tmp_path / "src")
    commit = hub.add_repo(REPO, files, lfs_threshold=1)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for name, diffusion, fmt in (("bf16-tiny", "tiny_bf16.safetensors", "bf16"),
                                 ("fp8-tiny", "tiny_fp8_scaled.safetensors", "fp8-scaled"),
                                 ("nvfp4-liar", "tiny_liar.safetensors", "nvfp4")):
        (bundles / f"{name}.yaml").write_text(bundle_yaml(name, commit, diffusion, fmt))
    return World(hub, tmp_path / "models", bundles, commit, files)


@pytest.fixture
async def world(tmp_path):
    async with HubServer() as hub:
        yield make_world(hub, tmp_path)
