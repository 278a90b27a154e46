"""Daemon tests: the loopback world of tests/library (tiny bundles on a loopback Hub), a config
writer, a stand-in for systemd's notify socket, and real ``modelmgr daemon`` processes whose log
lines are collected while they run."""

from __future__ import annotations

import asyncio
import io
import shlex
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.library import conftest as library_conftest
from tests.library.conftest import REPO, World
from tests.procs import cli_env

world = library_conftest.world  # the fixture: tiny bundles served by a loopback Hub

BF16 = "diffusion_models/tiny_bf16.safetensors"
FP8 = "diffusion_models/tiny_fp8_scaled.safetensors"
TE = "text_encoders/clip_l.safetensors"
VAE = "vae/ae.safetensors"
BLOBS = {BF16: "split_files/diffusion_models/tiny_bf16.safetensors",
         FP8: "split_files/diffusion_models/tiny_fp8_scaled.safetensors",
         TE: "split_files/text_encoders/clip_l.safetensors",
         VAE: "split_files/vae/ae.safetensors"}


def parse_line(line: str) -> dict[str, str]:
    """One ``key=value`` log line as a dict."""
    fields = {}
    for part in shlex.split(line):
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


def events(text: str, name: str | None = None) -> list[dict[str, str]]:
    rows = [parse_line(line) for line in text.splitlines() if "event=" in line]
    return [r for r in rows if name is None or r.get("event") == name]


def write_config(path: Path, world: World, bundles: list[str], **extra) -> Path:
    """A config for ``world`` with test-sized timers (1 s lease, fast progress lines)."""
    doc = {"root": str(world.root), "bundles": bundles, "interval": "1h",
           "locks": {"lease": "1s", "wait": "60s"}, "log": {"progress_every": "0.2s"}}
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def child_env(world: World, **extra: str) -> dict[str, str]:
    return cli_env(HF_ENDPOINT=world.hub.endpoint, MODELMGR_BUNDLES=str(world.bundles_dir),
                   **extra)


def cdn_bytes(world: World, relpath: str) -> int:
    """Body bytes the CDN sent for a bundle file's blob (probes included: they are 1 byte)."""
    sha = world.hub.file(REPO, BLOBS[relpath]).sha256
    return sum(r.bytes_sent for r in world.hub.cdn.requests if r.method == "GET" and sha in r.path)


def cdn_probes(world: World, relpath: str) -> int:
    """Downloads started for a file: the engine probes each download once with bytes=0-0."""
    sha = world.hub.file(REPO, BLOBS[relpath]).sha256
    return sum(1 for r in world.hub.cdn.requests if r.method == "GET" and sha in r.path
               and r.range == "bytes=0-0")


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: an abstract datagram socket collecting messages."""

    def __init__(self) -> None:
        self.name = f"@modelmgr-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock, self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
        self._changed.set()

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    async def wait_for(self, key: str, value: str = "", timeout: float = 20) -> dict:
        """The first message whose ``key`` starts with ``value``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, m in self.messages:
                if m.get(key, "\0").startswith(value):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value}* in {self.messages}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


class DaemonProc:
    """A real ``modelmgr`` process (``daemon`` or ``sync``) whose output lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err = io.StringIO()
        self._changed = asyncio.Event()
        self._readers = [asyncio.create_task(self._pump(proc.stdout, self.out.append)),
                         asyncio.create_task(self._pump(proc.stderr, self.err.write))]

    @classmethod
    async def start(cls, *args: str, env: dict[str, str]) -> "DaemonProc":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modelmgr", *args, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _pump(self, stream, sink: Callable[[str], object]) -> None:
        while line := await stream.readline():
            sink(line.decode())
            self._changed.set()

    @property
    def text(self) -> str:
        return "".join(self.out)

    def events(self, name: str | None = None) -> list[dict[str, str]]:
        return events(self.text, name)

    async def wait_event(self, name: str, timeout: float = 30, count: int = 1,
                         **match: str) -> dict[str, str]:
        """The ``count``-th log event ``name`` whose fields include ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.returncode is not None:
                raise AssertionError(f"no event {name} {match} (exit {self.proc.returncode}):\n"
                                     f"{self.text}\n{self.err.getvalue()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
            except TimeoutError:
                pass

    async def wait(self, timeout: float = 30) -> int:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return self.proc.returncode  # type: ignore[return-value]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig``; returns (exit code, seconds until exit)."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = await self.wait(timeout)
        return code, time.monotonic() - started

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@pytest.fixture
async def notify_socket():
    listener = NotifyListener()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
async def procs():
    """Every process a test starts goes in here and is killed at the end, whatever happened."""
    started: list[DaemonProc] = []

    async def start(*args: str, env: dict[str, str]) -> DaemonProc:
        proc = await DaemonProc.start(*args, env=env)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            await proc.kill()

