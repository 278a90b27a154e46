"""Effective settings: every environment variable modelmgr reads is declared once, here.

``Settings`` is a frozen value built from a mapping (``os.environ`` in the CLI, a plain dict in
tests) and passed down explicitly; nothing reads the environment at import time. Tokens are held
here and only here: download state files never contain them, so a resumed download re-reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

MiB = 1024 * 1024


def _default_root() -> str:
    return str(Path.home() / "ComfyUI" / "models")


def _size(text: str) -> int:
    """Parse ``123``, ``8M``, ``1.5G``, ``512K`` (binary multiples) into bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, factor in (("K", 1024), ("M", MiB), ("G", 1024 * MiB), ("T", 1024**4)):
        if text.endswith(suffix):
            text, mult = text[: -len(suffix)], factor
            break
    value = float(text)
    if value < 0:
        raise ValueError("negative size")
    return int(value * mult)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


@dataclass(frozen=True)
class Var:
    """One environment variable: where a setting comes from, its parser and its help text."""

    env: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def _setting(default: Any, env: str, help: str, parse: Callable[[str], Any] = str,
             secret: bool = False) -> Any:
    return field(default=default, metadata={"var": Var(env, parse, help, secret)})


@dataclass(frozen=True)
class Settings:
    """All knobs. Each field's metadata names its environment variable and help text."""

    models_root: str = _setting(None, "MODELMGR_ROOT",
                                "models root (ComfyUI models folder); default ~/ComfyUI/models")
    connections: int = _setting(16, "MODELMGR_CONNECTIONS", "ranged connections per file",
                                _positive_int)
    max_connections: int = _setting(64, "MODELMGR_MAX_CONNECTIONS",
                                    "connections across all files at once", _positive_int)
    parallel_files: int = _setting(4, "MODELMGR_PARALLEL_FILES", "files downloaded at once",
                                   _positive_int)
    min_part_size: int = _setting(8 * MiB, "MODELMGR_MIN_PART_SIZE",
                                  "smallest part a file is split into (e.g. 8M)", _size)
    limit_rate: int = _setting(0, "MODELMGR_LIMIT_RATE",
                               "total bandwidth cap in bytes/s (e.g. 50M); 0 = unlimited", _size)
    stall_timeout: float = _setting(30.0, "MODELMGR_STALL_TIMEOUT",
                                    "seconds without bytes before a connection is replaced",
                                    _positive_float)
    connect_timeout: float = _setting(20.0, "MODELMGR_CONNECT_TIMEOUT",
                                      "seconds to connect and get response headers",
                                      _positive_float)
    max_retries: int = _setting(8, "MODELMGR_MAX_RETRIES",
                                "failed attempts per part before giving up", _positive_int)
    retry_base: float = _setting(0.5, "MODELMGR_RETRY_BASE", "first backoff delay in seconds",
                                 _positive_float)
    retry_cap: float = _setting(30.0, "MODELMGR_RETRY_CAP", "longest backoff delay in seconds",
                                _positive_float)
    max_redirects: int = _setting(10, "MODELMGR_MAX_REDIRECTS", "redirects followed per request",
                                  _positive_int)
    state_interval: float = _setting(1.0, "MODELMGR_STATE_INTERVAL",
                                     "seconds between resume-state flushes", _positive_float)
    lock_wait: float = _setting(3600.0, "MODELMGR_LOCK_WAIT",
                                "seconds to wait for another process holding a target",
                                float)
    bundles_dir: str = _setting(None, "MODELMGR_BUNDLES",
                                "extra folder of bundle YAML files (adds or overrides)")
    daemon_config: str = _setting(None, "MODELMGR_CONFIG",
                                  "config file of `modelmgr daemon|sync|status` (YAML)")
    hf_endpoint: str = _setting("https://huggingface.co", "HF_ENDPOINT",
                                "Hugging Face endpoint (a mirror works)")
    hf_token: str = _setting(None, "HF_TOKEN", "Hugging Face token (else the stored hf login)",
                             secret=True)
    civitai_base_url: str = _setting("https://civitai.com", "MODELMGR_CIVITAI_URL",
                                     "CivitAI base URL")
    civitai_token: str = _setting(None, "CIVITAI_TOKEN", "CivitAI API key (sent as Bearer)",
                                  secret=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); bad values raise ConfigError."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            var: Var = f.metadata["var"]
            raw = env.get(var.env)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = var.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{var.env}={raw!r} is not valid: {exc}",
                                  f"expected {var.help}") from None
        settings = cls(**values)
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with the given non-None values replaced (command-line flags)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        updated = replace(self, **clean)
        if updated.hf_endpoint:
            object.__setattr__(updated, "hf_endpoint", updated.hf_endpoint.rstrip("/"))
        if updated.civitai_base_url:
            object.__setattr__(updated, "civitai_base_url", updated.civitai_base_url.rstrip("/"))
        return updated

    @property
    def root(self) -> Path:
        """The models root as a path."""
        return Path(self.models_root or _default_root()).expanduser()

    def token_for(self, credential: str | None) -> str | None:
        """The token for a credential name (``hf`` / ``civitai``), read now, never cached in state."""
        if credential == "hf":
            if self.hf_token:
                return self.hf_token
            try:  # the token stored by `hf auth login`, if any
                from huggingface_hub import get_token

                return get_token()
            except Exception:  # noqa: BLE001 - a broken hf config must not break downloads
                return None
        if credential == "civitai":
            return self.civitai_token
        return None

    def describe(self) -> list[tuple[str, str, str]]:
        """(env var, effective value, help) rows for ``modelmgr env``; secrets are masked."""
        rows = []
        for f in fields(self):
            var: Var = f.metadata["var"]
            value = getattr(self, f.name)
            if f.name == "models_root":
                value = str(self.root)
            if var.secret:
                value = mask_secret(value)
            rows.append((var.env, "" if value is None else str(value), var.help))
        return rows


def mask_secret(value: str | None) -> str:
    """Show that a secret is set without revealing it."""
    if not value:
        return "(not set)"
    return "set (hidden)"
