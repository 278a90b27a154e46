"""``modelmgr pull hf|civitai|url``: resolve a source, then download with the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..settings import _size
from ..errors import UsageError
from . import bundles
from .common import load_settings, pull_and_report
from .options import ROOT

app = typer.Typer(no_args_is_help=True, help="Download files from Hugging Face, CivitAI or a URL.")

DEST = typer.Option(Path("."), "--dest", "-d", help="Folder to put the files in.")
CONNECTIONS = typer.Option(None, "--connections", "-c", min=1, max=64,
                           help="Ranged connections per file (default 16).")
from .options import JSON  # noqa: E402
LIMIT = typer.Option(None, "--limit-rate", help="Total bandwidth cap, e.g. 50M (bytes/s).")
NO_HASH = typer.Option(False, "--no-hash", hidden=True,
                       help="Skip hashing when no expected hash is known (benchmarks).")


def _settings(connections: Optional[int], limit_rate: Optional[str]):
    rate = None
    if limit_rate is not None:
        try:
            rate = _size(limit_rate)
        except ValueError:
            raise UsageError(f"--limit-rate {limit_rate!r} is not a size",
                             "use bytes per second like 500K, 50M or 1G") from None
    return load_settings(connections=connections, limit_rate=rate)


@app.command("hf")
def pull_hf(repo_id: str = typer.Argument(..., help="Repo id, e.g. Comfy-Org/z_image_turbo."),
            files: list[str] = typer.Argument(..., help="File paths inside the repo."),
            revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit."),
            repo_type: str = typer.Option("model", "--repo-type", help="model | dataset | space"),
            dest: Path = DEST, connections: Optional[int] = CONNECTIONS, as_json: bool = JSON,
            limit_rate: Optional[str] = LIMIT, no_hash: bool = NO_HASH) -> None:
    """Pull files from a Hugging Face repo, pinned to a commit and verified by sha256."""
    settings = _settings(connections, limit_rate)
    code = pull_and_report(settings, lambda m: m.resolve_hf(repo_id, files, revision, repo_type),
                           dest, as_json, hash_always=not no_hash)
    raise typer.Exit(code)


@app.command("civitai")
def pull_civitai(ref: str = typer.Argument(..., help="Model version id, or a civitai.com URL."),
                 file_id: Optional[int] = typer.Option(None, "--file-id",
                                                       help="Pin one file of the version."),
                 dest: Path = DEST, connections: Optional[int] = CONNECTIONS, as_json: bool = JSON,
                 limit_rate: Optional[str] = LIMIT, no_hash: bool = NO_HASH) -> None:
    """Pull a CivitAI model version's file (the primary one unless --file-id)."""
    settings = _settings(connections, limit_rate)
    code = pull_and_report(settings, lambda m: m.resolve_civitai(ref, file_id), dest, as_json,
                           hash_always=not no_hash)
    raise typer.Exit(code)


@app.command("bundle")
def pull_bundle(name: str = typer.Argument(..., help="Bundle name, e.g. nvfp4-zimage."),
                root: Optional[Path] = ROOT,
                dry_run: bool = typer.Option(False, "--dry-run",
                                             help="Resolve and plan, check space, fetch nothing."),
                connections: Optional[int] = CONNECTIONS, as_json: bool = JSON,
                limit_rate: Optional[str] = LIMIT) -> None:
    """Put a whole bundle (model, text encoder, VAE) under the models root, verified."""
    rate = _settings(connections, limit_rate).limit_rate if limit_rate else None
    raise typer.Exit(bundles.pull_bundle(name, root, dry_run, as_json, connections, rate))


@app.command("url")
def pull_url(url: str = typer.Argument(..., help="http(s) URL of the file."),
             sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected sha256."),
             blake3: Optional[str] = typer.Option(None, "--blake3", help="Expected BLAKE3."),
             name: Optional[str] = typer.Option(None, "--name", help="File name to save as."),
             dest: Path = DEST, connections: Optional[int] = CONNECTIONS, as_json: bool = JSON,
             limit_rate: Optional[str] = LIMIT, no_hash: bool = NO_HASH) -> None:
    """Pull a file from a plain URL, verified when you give --sha256 or --blake3."""
    if sha256 and blake3:
        raise UsageError("give either --sha256 or --blake3, not both")
    settings = _settings(connections, limit_rate)
    code = pull_and_report(settings, lambda m: m.resolve_url(url, sha256=sha256, blake3=blake3,
                                                             name=name),
                           dest, as_json, hash_always=not no_hash)
    raise typer.Exit(code)
