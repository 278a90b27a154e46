"""Shared helpers for engine tests: fast settings, random payloads, a one-call pull."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from modelmgr.download.engine import Engine, FileJob, FileResult
from modelmgr.download.plan import filled_bytes
from modelmgr.download.progress import ProgressHub
from modelmgr.download.state import load_state, state_path
from modelmgr.settings import Settings
from modelmgr.sources.base import RemoteFile

KiB = 1024
MiB = 1024 * KiB


def fast_settings(**overrides) -> Settings:
    """Settings with tiny parts and short timers so fault tests run in milliseconds."""
    values = dict(min_part_size=64 * KiB, retry_base=0.01, retry_cap=0.05, stall_timeout=0.5,
                  state_interval=0.05, connect_timeout=5.0, lock_wait=5.0, max_retries=6)
    values.update(overrides)
    return Settings.from_env({}, **values)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_for(url: str, data: bytes | None, name: str = "model.safetensors", *,
               with_hash: bool = True, size_known: bool = True, **kw) -> RemoteFile:
    return RemoteFile(url=url, name=name, source=f"test:{name}",
                      size=len(data) if (data is not None and size_known) else None,
                      sha256=sha256(data) if (data is not None and with_hash) else None, **kw)


async def pull_one(settings: Settings, remote: RemoteFile, dest: Path,
                   hub: ProgressHub | None = None) -> FileResult:
    [result] = await Engine(settings, hub).pull([FileJob(remote, dest)])
    return result


def leftovers(dest: Path) -> list[str]:
    """Files other than finished targets (partials, sidecars, locks)."""
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*")
                  if p.is_file() and p.name.endswith((".partial", ".json", ".lock", ".tmp")))


def saved_bytes(partial: Path) -> int:
    """Bytes the resume sidecar of ``partial`` says are on disk (0 without a usable sidecar)."""
    state = load_state(state_path(partial))
    return filled_bytes(state.segments) if state else 0


async def wait_until_saved(partial: Path, at_least: int, seconds: float = 20.0) -> int:
    """Poll the sidecar (bounded) until ``at_least`` bytes are recorded; returns what it saw."""
    saved = 0
    for _ in range(int(seconds / 0.02)):
        await asyncio.sleep(0.02)
        saved = saved_bytes(partial)
        if saved >= at_least:
            break
    return saved


def read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


__all__ = ["fast_settings", "payload", "sha256", "remote_for", "pull_one", "leftovers", "read",
           "saved_bytes", "wait_until_saved", "KiB", "MiB"]
