"""What ``smoke`` / ``bench`` / ``quantize`` were pointed at: a bundle, a recorded asset or a file.

A bundle brings its diffusion model (which must be installed), its VAE when present, and its
performance references. A file brings only itself (``--vae`` may add one). Whichever it is, when
the diffusion model is recorded in the registry, results are stored on that asset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..catalogue.model import Bundle, Expected
from ..errors import NotFoundError, UsageError


@dataclass(frozen=True)
class Target:
    """One variant to run."""

    label: str
    """How reports name it: the bundle name or the file name."""
    path: Path
    """The diffusion-model file."""
    asset: str | None = None
    """Its registry key, when it is recorded under the models root."""
    bundle: Bundle | None = None
    vae: Path | None = None
    references: tuple[Expected, ...] = ()


def resolve(manager, text: str, vae: Path | None = None) -> Target:
    """A bundle name, a path under the root as recorded, or any file path → Target."""
    path = Path(text).expanduser()
    if path.is_file():
        return Target(path.name, path, _asset_key(manager, path), vae=vae)
    library = manager.library
    if library.registry.get(text) is not None:
        full = library.path_of(text)
        return Target(Path(text).name, full, text, vae=vae)
    if text in manager.catalogue.bundles or text in manager.catalogue.errors:
        return _bundle_target(manager, manager.catalogue.get(text), vae)
    if path.suffix:
        raise NotFoundError(f"{text}: no such file", "give an existing .safetensors/.gguf file or a bundle name")
    manager.catalogue.get(text)  # raises NotFoundError with close bundle names
    raise NotFoundError(f"{text!r} is not a bundle or a file")


def _asset_key(manager, path: Path) -> str | None:
    try:
        key = manager.library.relpath_of(path)
    except UsageError:
        return None
    return key if manager.library.registry.get(key) is not None else None


def _bundle_target(manager, bundle: Bundle, vae: Path | None) -> Target:
    library = manager.library
    model = bundle.file_for("diffusion_model") or bundle.file_for("checkpoint")
    if model is None:
        raise UsageError(f"bundle {bundle.name} has no diffusion model file")
    status = library.status(model)
    if status.state == "missing":
        raise NotFoundError(f"{bundle.name}: {model.relpath} is not under {library.root}",
                            f"modelmgr pull bundle {bundle.name}")
    if vae is None and (vfile := bundle.file_for("vae")) is not None:
        vstatus = library.status(vfile)
        vae = vstatus.path if vstatus.state != "missing" else None
    asset = model.relpath if library.registry.get(model.relpath) is not None else None
    return Target(bundle.name, status.path, asset, bundle, vae, bundle.expected)


def record(manager, target: Target, result: dict) -> bool:
    """Store ``result`` on the diffusion model's asset (latest run, and the latest per device)."""
    if target.asset is None:
        return False
    registry = manager.library.registry
    asset = registry.get(target.asset)
    if asset is None:
        return False
    doc = dict(asset.smoke or {})
    by_device = dict(doc.get("by_device") or {})
    by_device[result["device"]["name"]] = result
    doc.update(latest=result, by_device=by_device, updated_at=time.time())
    registry.update(target.asset, smoke=doc)
    return True
