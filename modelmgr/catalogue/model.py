"""Bundle value objects: what a bundle YAML means once it passed validation at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError

ROLES = ("diffusion_model", "text_encoder", "vae", "lora", "checkpoint")
FAMILIES = ("z-image", "flux1", "flux1-kontext", "flux2")
PRECISIONS = ("bf16", "fp16", "fp32", "fp8", "fp8-scaled", "fp8-mixed", "gguf-q8_0", "nvfp4",
              "mxfp8")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HF_SPEC = re.compile(r"^hf:(?:(datasets|spaces)/)?([\w.-]+/[\w.-]+)@([^/\s]+)/(.+)$")
_CIVITAI_SPEC = re.compile(r"^civitai:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class SourceSpec:
    """Where a bundle file comes from, parsed from ``hf:`` / ``civitai:`` / ``url:`` text."""

    kind: str
    """``hf`` | ``civitai`` | ``url``."""
    text: str
    """The spec as written (used as the file's source in the registry)."""
    repo_id: str | None = None
    """HF repo id."""
    repo_type: str = "model"
    """HF repo type."""
    revision: str | None = None
    """HF revision (a commit sha when pinned)."""
    path: str | None = None
    """HF path inside the repo."""
    version_id: int | None = None
    """CivitAI model version id."""
    file_id: int | None = None
    """CivitAI file id (pins one file of the version)."""
    url: str | None = None
    """Plain URL."""

    @property
    def pinned_commit(self) -> bool:
        """True when the revision is a full commit sha (HF) or the file id is fixed (CivitAI)."""
        if self.kind == "hf":
            return bool(self.revision and COMMIT.match(self.revision))
        return self.kind == "civitai" and self.file_id is not None

    @property
    def basename(self) -> str:
        if self.kind == "hf":
            return self.path.rsplit("/", 1)[-1]  # type: ignore[union-attr]
        if self.kind == "url":
            return urlsplit(self.url or "").path.rsplit("/", 1)[-1]
        return ""


def parse_source(text: str) -> SourceSpec:
    """Parse a source spec; UsageError with the accepted forms when it is malformed."""
    text = text.strip()
    m = _HF_SPEC.match(text)
    if m:
        kind, repo, rev, path = m.groups()
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(kind or "", "model")
        return SourceSpec("hf", text, repo_id=repo, repo_type=repo_type, revision=rev, path=path)
    m = _CIVITAI_SPEC.match(text)
    if m:
        return SourceSpec("civitai", text, version_id=int(m.group(1)),
                          file_id=int(m.group(2)) if m.group(2) else None)
    if text.startswith("url:"):
        url = text[4:]
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname:
            return SourceSpec("url", text, url=url)
    raise UsageError(f"not a source spec: {text!r}",
                     "use hf:OWNER/REPO@REVISION/PATH, civitai:VERSION[:FILE] or url:https://...")


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle."""

    role: str
    """diffusion_model | text_encoder | vae | lora | checkpoint."""
    source: SourceSpec
    """Where it comes from."""
    folder: str
    """ComfyUI folder under the models root (canonical name)."""
    filename: str
    """File name inside the folder (checked by safe_relpath)."""
    format: str
    """Declared content format (checked against the file's header after download)."""
    size: int | None = None
    """Expected size in bytes, when known."""
    sha256: str | None = None
    """Expected sha256, when known."""
    family: str | None = None
    """Declared family (z-image, flux1, qwen3, t5, flux1-vae, ...), checked when given."""
    gated: bool = False
    """Needs a licence accepted / a token."""

    @property
    def relpath(self) -> str:
        """Path under the models root."""
        return f"{self.folder}/{self.filename}"


@dataclass(frozen=True)
class Expected:
    """A published performance reference for the bundle's diffusion model."""

    gpu: str
    """GPU name as torch reports it (e.g. ``NVIDIA GeForce RTX 5090``)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""
    steps: int
    """Sampling steps of the reference run."""
    it_s: float
    """Iterations per second measured."""
    tolerance: float = 0.15
    """Accepted shortfall as a fraction (0.15 = PASS down to 85 % of ``it_s``)."""
    source: str = ""
    """Where the number comes from."""


@dataclass(frozen=True)
class Bundle:
    """A named working set: diffusion model + text encoder(s) + VAE, and what to expect of it."""

    name: str
    """``<precision>-<model>``, e.g. ``nvfp4-zimage``."""
    title: str
    """Human title."""
    family: str
    """z-image | flux1 | flux1-kontext | flux2."""
    precision: str
    """The diffusion model's precision."""
    licence: str
    """Licence id."""
    gated: bool
    """True if any file needs a licence accepted or a token."""
    files: tuple[BundleFile, ...]
    """Its files."""
    expected: tuple[Expected, ...] = ()
    """Performance references."""
    description: str = ""
    """One or two sentences."""
    licence_url: str | None = None
    """Where the licence is."""
    origin: str = ""
    """The YAML file it was loaded from (shown in errors and ``bundles show``)."""

    @property
    def total_size(self) -> int | None:
        """Sum of known sizes (None when any is unknown)."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]

    def file_for(self, role: str) -> BundleFile | None:
        return next((f for f in self.files if f.role == role), None)
