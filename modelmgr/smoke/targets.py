"""What ``smoke`` / ``bench`` / ``quantize`` were pointed at: a bundle, a recorded asset or a file.

A bundle brings its diffusion model (which must be installed), its VAE when present, its text
encoders (needed only when text conditioning is asked for, so a missing one is noted, not an
error here) and its performance references. A file brings only itself (``--vae`` and
``--text-encoder`` may add to it). Whichever it is, when the diffusion model is recorded in the
registry, results are stored on that asset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
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
    text_encoders: tuple[Path, ...] = ()
    """Text-encoder files: the bundle's installed ones, or the ``--text-encoder`` files."""
    missing_text_encoders: tuple[str, ...] = ()
    """The bundle's text encoders that are not under the root (an error only when asked for)."""


def resolve(manager, text: str, vae: Path | None = None, text_encoders: tuple[Path, ...] = ()) -> Target:
    """A bundle name, a path under the root as recorded, or any file path → Target.

    ``text_encoders`` (``--text-encoder``) replace a bundle's own and give a file some.
    """
    for te in text_encoders:
        if not Path(te).is_file():
            raise NotFoundError(f"--text-encoder {te}: no such file")
    encoders = tuple(Path(te) for te in text_encoders)
    path = Path(text).expanduser()
    if path.is_file():
        return Target(path.name, path, _asset_key(manager, path), vae=vae, text_encoders=encoders)
    library = manager.library
    if library.registry.get(text) is not None:
        full = library.path_of(text)
        return Target(Path(text).name, full, text, vae=vae, text_encoders=encoders)
    if text in manager.catalogue.bundles or text in manager.catalogue.errors:
        target = _bundle_target(manager, manager.catalogue.get(text), vae)
        return replace(target, text_encoders=encoders, missing_text_encoders=()) if encoders else target
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
    present, missing = [], []
    for tfile in (f for f in bundle.files if f.role == "text_encoder"):
        tstatus = library.status(tfile)
        if tstatus.state == "missing":
            missing.append(tfile.relpath)
        else:
            present.append(tstatus.path)
    asset = model.relpath if library.registry.get(model.relpath) is not None else None
    return Target(bundle.name, status.path, asset, bundle, vae, bundle.expected, tuple(present), tuple(missing))


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
