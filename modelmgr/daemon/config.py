"""The daemon's YAML config: what a volume must hold and how to keep it so.

Validated at the edge like bundle files (``catalogue/loader.py``): every complaint reads
``FILE:LINE: FIELD: PROBLEM`` and raises ConfigError (exit code 2), and unknown keys are errors so
that a typo (``prune: {enable: true}``) never silently changes behaviour. The schema is documented
in systemd/README.md; ``systemd/modelmgr.yaml.example`` is a complete example.

Tokens never live in the YAML (it tends to end up in git): ``tokens_file`` names a systemd-style
environment file whose ``HF_TOKEN`` / ``CIVITAI_TOKEN`` lines are read with the config.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..catalogue.loader import NAME, _Node, compose_yaml
from ..errors import ConfigError
from ..settings import Settings, _size

SCHEMA_HINT = "see systemd/README.md for the config schema"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_OFF = ("off", "never", "no", "false", "0")
TOKEN_VARS = {f.metadata["var"].env: f.name for f in fields(Settings)
              if f.metadata["var"].secret}
"""Environment names a tokens file may set (HF_TOKEN, CIVITAI_TOKEN) -> Settings field."""


class _ConfigNode(_Node):
    """A config YAML node: the bundle loader's typed accessors, with the config's error."""

    def fail(self, problem: str) -> ConfigError:  # type: ignore[override]
        line = self.node.start_mark.line + 1
        return ConfigError(f"{self.path}:{line}: {self.field}: {problem}", SCHEMA_HINT)

    def duration(self, *, allow_off: bool = False, low: float = 0.0) -> float:
        """Seconds from ``30``, ``90s``, ``15m``, ``1h``, ``7d`` (and ``off`` = 0 if allowed)."""
        value = self.value()
        if allow_off and (value is False or str(value).strip().lower() in _OFF):
            return 0.0
        if isinstance(value, bool):
            raise self.fail("must be a duration such as 30s, 15m, 1h or 7d")
        m = _DURATION.match(str(value))
        if not m:
            raise self.fail(f"{value!r} is not a duration (30s, 15m, 1h, 7d"
                            f"{' or off' if allow_off else ''})")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds < low or seconds <= 0:
            raise self.fail(f"must be at least {low:g} seconds")
        return seconds

    def size(self) -> int:
        value = self.value()
        try:
            if isinstance(value, bool):
                raise ValueError
            return _size(str(value))
        except ValueError:
            raise self.fail(f"{value!r} is not a size (bytes, or 500K, 50M, 1G)") from None

    def path_value(self) -> Path:
        path = Path(self.text()).expanduser()
        if not path.is_absolute():
            raise self.fail(f"{path} must be an absolute path")
        return path


@dataclass(frozen=True)
class DaemonConfig:
    """One parsed config file. Durations are seconds; 0 means "never" where allowed."""

    path: Path
    """The file it was read from (for messages and SIGHUP reloads)."""
    root: Path
    """The models root: the mounted volume, or a folder on it."""
    bundles: tuple[str, ...]
    """Bundles the root must hold (names from the catalogue)."""
    name: str
    """This daemon's name in the cycle records on the volume (default: the host name)."""
    interval: float = 900.0
    """Seconds between the end of one cycle and the start of the next."""
    connections: int | None = None
    """Ranged connections per file (None: MODELMGR_CONNECTIONS or the default)."""
    max_connections: int | None = None
    """Connections across all files."""
    parallel_files: int | None = None
    """Files downloaded at once."""
    limit_rate: int | None = None
    """Total bandwidth cap in bytes/s (0 = unlimited)."""
    bundles_dir: Path | None = None
    """An extra folder of bundle YAML files."""
    tokens_file: Path | None = None
    """The environment file the tokens were read from."""
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    """HF_TOKEN / CIVITAI_TOKEN from ``tokens_file`` (never logged)."""
    verify_quick: bool = True
    """Check size, mtime and header of the wanted files every cycle."""
    deep_every: float = 7 * 86400.0
    """Re-hash every wanted file this often (0 = never)."""
    prune: bool = False
    """Delete files of bundles no longer wanted (only files modelmgr installed)."""
    lease: float = 60.0
    """Seconds a volume lock lives without a heartbeat before another machine may take it."""
    lock_wait: float = 3600.0
    """Seconds to wait for files another machine is fetching before reporting them locked."""
    max_clock_skew: float = 30.0
    """Bound on clock differences between machines (docs/volume-locks.md)."""
    progress_every: float = 5.0
    """Seconds between progress log lines while downloading."""
    metrics_listen: tuple[str, int] | None = None
    """Loopback (host, port) of the Prometheus endpoint; None = off. Port 0 picks a free port."""
    where: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """``FILE:LINE: FIELD`` of some values, for messages that point back at the config."""

    def settings(self, env: Mapping[str, str]) -> Settings:
        """Effective settings: the environment, overridden by this config and its tokens."""
        tokens = {TOKEN_VARS[k]: v for k, v in self.tokens.items()}
        return Settings.from_env(
            env, models_root=str(self.root), connections=self.connections,
            max_connections=self.max_connections, parallel_files=self.parallel_files,
            limit_rate=self.limit_rate, lock_wait=self.lock_wait,
            bundles_dir=str(self.bundles_dir) if self.bundles_dir else None, **tokens)

    def to_dict(self) -> dict:
        """A JSON-able view for ``status --json`` (no tokens, only which ones are set)."""
        return {"path": str(self.path), "root": str(self.root), "bundles": list(self.bundles),
                "name": self.name, "interval": self.interval, "prune": self.prune,
                "verify_quick": self.verify_quick, "deep_every": self.deep_every,
                "lease": self.lease, "tokens_set": sorted(self.tokens),
                "metrics_listen": (f"{self.metrics_listen[0]}:{self.metrics_listen[1]}"
                                   if self.metrics_listen else None)}


def load_config(path: Path) -> DaemonConfig:
    """Read and validate a config file; ConfigError naming the file, line and field."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}",
                          "pass --config or set MODELMGR_CONFIG to a readable file") from None
    root_node = compose_yaml(text, path, ConfigError)
    if root_node is None:
        raise ConfigError(f"{path}: the config is empty", SCHEMA_HINT)
    top = _ConfigNode(root_node, path, "").mapping(
        ("root", "bundles"),
        ("name", "interval", "bundles_dir", "tokens_file", "downloads", "verify", "prune",
         "locks", "log", "metrics"))
    values: dict[str, Any] = {"path": path, "root": top["root"].path_value(),
                              "bundles": _bundles(top["bundles"]),
                              "name": top["name"].text() if "name" in top else _hostname()}
    where = {name: _where(node) for name, node in zip(values["bundles"],
                                                       _items(top["bundles"]))}
    if "interval" in top:
        values["interval"] = top["interval"].duration(low=1.0)
    if "bundles_dir" in top:
        values["bundles_dir"] = top["bundles_dir"].path_value()
    if "tokens_file" in top:
        values["tokens_file"] = top["tokens_file"].path_value()
        values["tokens"] = read_tokens(top["tokens_file"], values["tokens_file"])
    if "downloads" in top:
        d = top["downloads"].mapping((), ("connections", "max_connections", "parallel_files",
                                          "limit_rate"))
        for key in ("connections", "max_connections", "parallel_files"):
            if key in d:
                values[key] = d[key].number(int, 1)
        if "limit_rate" in d:
            values["limit_rate"] = d["limit_rate"].size()
    if "verify" in top:
        v = top["verify"].mapping((), ("quick", "deep_every"))
        if "quick" in v:
            values["verify_quick"] = v["quick"].flag()
        if "deep_every" in v:
            values["deep_every"] = v["deep_every"].duration(allow_off=True, low=60.0)
    if "prune" in top:
        values["prune"] = top["prune"].mapping(("enabled",), ())["enabled"].flag()
    if "locks" in top:
        lk = top["locks"].mapping((), ("lease", "wait", "max_clock_skew"))
        if "lease" in lk:
            values["lease"] = lk["lease"].duration(low=0.5)
        if "wait" in lk:
            values["lock_wait"] = lk["wait"].duration(low=1.0)
        if "max_clock_skew" in lk:
            values["max_clock_skew"] = lk["max_clock_skew"].duration(low=0.001)
    if "log" in top:
        lg = top["log"].mapping((), ("progress_every",))
        if "progress_every" in lg:
            values["progress_every"] = lg["progress_every"].duration(low=0.1)
    if "metrics" in top:
        m = top["metrics"].mapping(("listen",), ())
        values["metrics_listen"] = _loopback_address(m["listen"])
        where["metrics"] = _where(m["listen"])
    return DaemonConfig(**values, where=where)


def _items(node: _ConfigNode) -> list[_ConfigNode]:
    return node.sequence() if node.node.value else []  # type: ignore[return-value]


def _bundles(node: _ConfigNode) -> tuple[str, ...]:
    """The wanted bundle names; an empty list is allowed (hold nothing, e.g. before pruning)."""
    if not isinstance(node.node, yaml.SequenceNode):
        raise node.fail("must be a list of bundle names")
    names: list[str] = []
    for item in _items(node):
        name = item.text(NAME)
        if name in names:
            raise item.fail(f"{name} appears twice")
        names.append(name)
    return tuple(names)


def _where(node: _ConfigNode) -> str:
    return f"{node.path}:{node.node.start_mark.line + 1}: {node.field}"


def _loopback_address(node: _ConfigNode) -> tuple[str, int]:
    """``127.0.0.1:9464`` / ``[::1]:9464`` / ``localhost:9464``; anything else is refused: the
    endpoint has no authentication, so it never listens beyond this machine."""
    text = node.text()
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise node.fail(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise node.fail(f"{host} is not a loopback address; the metrics endpoint has no "
                        "authentication and only listens on 127.0.0.1 or ::1")
    return host, int(port_text)


def read_tokens(node: _ConfigNode, path: Path) -> dict[str, str]:
    """HF_TOKEN / CIVITAI_TOKEN from a systemd-style environment file.

    The same file can serve as the unit's ``EnvironmentFile=``, so other variables are allowed
    and ignored; malformed lines are errors naming the line (never echoing a value).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise node.fail(f"cannot read {path}: {exc.strerror or exc}") from None
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not eq or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"{path}:{number}: not a KEY=VALUE line",
                              "the tokens file holds lines like HF_TOKEN=hf_...")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key in TOKEN_VARS and value:
            tokens[key] = value
    return tokens


def _hostname() -> str:
    return socket.gethostname() or "localhost"
