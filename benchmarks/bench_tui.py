"""TUI benchmarks: opening a big library, and keys during a full-speed pull.

* library: 1,000 assets (rows written straight into a Registry at a temp root, with plausible
  inspection results) are opened in the Library screen. Measured: from creating the App to the
  first paint of the screen with every row in its table, headless (``App.run_test``).
  Target: < 1 s.
* keys during a pull: a loopback Hub in a separate process (as a real server would be) serves
  one ``--size`` safetensors file at full speed; the TUI pulls it as a bundle with the default 16
  connections while key presses switch screens (3, 2, 1, ...) every ``--gap`` seconds. Measured
  per key: from posting the key event to the first paint of the screen it switched to.
  Target: p95 < 100 ms. For the cost of the UI to the pull, the same pull also runs without
  the TUI and in the idle TUI (Transfers shown, sampled at 10 Hz): the engine shares the
  interpreter lock with the UI, so each repaint is time the pull's thread waits.

Paints are observed by wrapping the App's private ``_display`` (what the compositor hands to the
terminal driver; headless runs skip only the final ANSI encoding). Run from the repo root:

    python benchmarks/bench_tui.py [--assets 1000] [--size 1G] [--gap 0.03]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402

from modelmgr.registry.store import Asset, Registry  # noqa: E402
from modelmgr.service import ModelManager  # noqa: E402
from modelmgr.settings import Settings, _size  # noqa: E402
from modelmgr_tui.app import ModelMgrApp  # noqa: E402

FOLDERS = (("diffusion_models", "diffusion_model", "flux1", "fp8-scaled", 12_000_000_000),
           ("text_encoders", "text_encoder", "t5", "fp16", 9_800_000_000),
           ("vae", "vae", "flux1-vae", "bf16", 168_000_000),
           ("loras", "lora", "flux1", "bf16", 300_000_000),
           ("checkpoints", "checkpoint", "z-image", "bf16", 20_000_000_000))


class Paints:
    """Calls ``check(screen)`` hooks on every paint of ``app``."""

    def __init__(self, app: ModelMgrApp) -> None:
        self.hooks: list = []
        display = app._display

        def observed(screen, renderable) -> None:
            display(screen, renderable)
            for hook in list(self.hooks):
                hook(screen)

        app._display = observed  # type: ignore[method-assign]

    async def until(self, condition, timeout: float = 10.0) -> float:
        """perf_counter() of the first paint at which ``condition(screen)`` holds."""
        future = asyncio.get_running_loop().create_future()

        def hook(screen) -> None:
            if not future.done() and condition(screen):
                future.set_result(time.perf_counter())

        self.hooks.append(hook)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.hooks.remove(hook)


# -- 1,000 assets ------------------------------------------------------------------------------
def fill_registry(root: Path, count: int) -> None:
    now = time.time()
    with Registry(root) as registry:
        for i in range(count):
            folder, role, family, precision, size = FOLDERS[i % len(FOLDERS)]
            params = size // 2
            inspection = {
                "path": None, "format": "safetensors", "file_size": size, "header_size": 98_304,
                "tensor_count": 780, "param_count": params,
                "dtype_bytes": {"F8_E4M3": size - 4_000_000, "F32": 4_000_000}
                if precision.startswith("fp8") else {precision.upper(): size},
                "precision": precision, "quant_layers": {}, "family": family,
                "variant": "dev" if family == "flux1" else None, "role": role, "unsafe": False,
                "warnings": [], "metadata": {"format": "pt"}}
            registry.upsert(Asset(
                path=f"{folder}/model-{i:04d}-{precision}.safetensors", size=size,
                mtime_ns=1_700_000_000_000_000_000 + i, sha256=f"{i:064x}",
                source=f"hf:org/repo@{'a' * 40}/model-{i:04d}.safetensors", revision="a" * 40,
                managed=True, format="safetensors", precision=precision, family=family,
                role=role, inspection=inspection, verified_at=now, verify_status="ok",
                verify_detail="verified on download"))


async def open_library(root: Path, count: int) -> float:
    manager = ModelManager(Settings.from_env({}, models_root=str(root)))
    started = time.perf_counter()
    app = ModelMgrApp(manager, initial="library")
    paints = Paints(app)
    rows = count + len(FOLDERS)
    try:
        async with app.run_test(size=(160, 48)):
            painted = await paints.until(
                lambda screen: _rows(screen, "#assets") == rows)
    finally:
        manager.close()
    return painted - started


def _rows(screen, selector: str) -> int:
    try:
        return screen.query_one(selector).row_count
    except Exception:  # noqa: BLE001 - not that screen, or not composed yet
        return -1


# -- keys during a full-speed pull -------------------------------------------------------------
SERVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.servers.base import run_in_thread
from tests.servers.hub import HubServer
with run_in_thread(HubServer()) as hub:
    commit = hub.add_repo("bench/tui", {"model.safetensors": Path(sys.argv[2])}, lfs_threshold=1)
    sha = hub.file("bench/tui", "model.safetensors").sha256
    print(json.dumps({"endpoint": hub.endpoint, "commit": commit, "sha256": sha}), flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""

BUNDLE = """\
name: bf16-bench
title: TUI benchmark bundle
family: flux1
precision: bf16
licence: apache-2.0
gated: false
files:
  - role: diffusion_model
    source: "hf:bench/tui@{commit}/model.safetensors"
    folder: diffusion_models
    format: bf16
    size: {size}
    sha256: {sha256}
expected:
  - gpu: NVIDIA GeForce RTX 5090
    resolution: 1024x1024
    steps: 4
    it_s: 10.0
"""


def write_model(path: Path, size: int) -> int:
    """A real safetensors file of about ``size`` bytes: one BF16 tensor of random-looking data."""
    n = (size - 256) // 2
    header = json.dumps({"weight": {"dtype": "BF16", "shape": [n],
                                    "data_offsets": [0, 2 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = 2 * n
        while left:
            fh.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    os.sync()  # its writeback would otherwise slow whichever pull runs first
    return path.stat().st_size


async def keys_during_pull(work: Path, size: int, gap: float) -> dict:
    """The same pull three times: without the TUI, in the idle TUI (Transfers shown), and in
    the TUI while keys switch screens every ``gap`` seconds."""
    model = work / "model.safetensors"
    size = write_model(model, size)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), str(model)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        bundles = work / "bundles"
        bundles.mkdir()
        (bundles / "bf16-bench.yaml").write_text(BUNDLE.format(size=size, **info))
        results = {"bytes": size}
        # a first, unrecorded pull warms up what the first pull of a process pays for
        for run, gap_or_none in (("warm-up", None), ("alone", None), ("idle", None),
                                 ("keys", gap)):
            manager = ModelManager(Settings.from_env(
                {}, hf_endpoint=info["endpoint"], models_root=str(work / f"models-{run}"),
                bundles_dir=str(bundles)))
            try:
                if run in ("warm-up", "alone"):
                    report = await manager.install_bundle("bf16-bench")
                    assert report.ok, report
                    seconds = report.seconds
                else:
                    seconds, latencies = await _pull_in_tui(manager, gap_or_none)
            finally:
                manager.close()
                # drop the copy now: its dirty pages written back during the next run slow it
                shutil.rmtree(work / f"models-{run}")
            results[f"{run}_MBps"] = round(size / seconds / 1e6, 1)
        return results | _percentiles(latencies)
    finally:
        server.stdin.close()
        server.wait(timeout=30)


async def _pull_in_tui(manager: ModelManager, gap: float | None) -> tuple[float, list[float]]:
    """Pull from the Catalogue; with ``gap``, switch screens by key until the pull ends (each
    key timed to the paint of its screen), else watch it on the Transfers screen."""
    app = ModelMgrApp(manager)
    paints = Paints(app)
    latencies: list[float] = []
    async with app.run_test(size=(160, 48)) as pilot:
        while _rows(app.screen, "#bundles") < 1:
            await pilot.pause(0.05)
        await pilot.press(*"bf16-bench", "down")
        job = app.pull("bf16-bench")
        assert job is not None
        if gap is None:
            await pilot.press("3")
        cycle = (("3", "transfers"), ("2", "library"), ("1", "catalogue"))
        i = 0
        while job.active:
            if gap is None:
                await asyncio.sleep(0.05)
                continue
            key, mode = cycle[i % len(cycle)]
            i += 1
            sent = time.perf_counter()
            app.post_message(events.Key(key, key))
            painted = await paints.until(lambda s, mode=mode: app.current_mode == mode
                                         and s is app.screen)
            if job.active:
                latencies.append(painted - sent)
            await asyncio.sleep(gap)
    assert job.state == "done", job.error or job.report
    return job.report.seconds, latencies  # the install itself, from its own clock


def _percentiles(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {"keys": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=1000, help="library size (default 1000)")
    parser.add_argument("--size", type=_size, default=_size("1G"),
                        help="file pulled during the key presses (default 1G)")
    parser.add_argument("--gap", type=float, default=0.03,
                        help="seconds between key presses (default 0.03)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        work = Path(tmp)
        root = work / "library"
        fill_registry(root, args.assets)
        opened = asyncio.run(open_library(root, args.assets))
        print(f"library: {args.assets} assets open and painted in {opened * 1000:.0f} ms "
              f"(target < 1000 ms)")
        keys = asyncio.run(keys_during_pull(work, args.size, args.gap))
        print(f"pull of {keys['bytes'] / 2**20:.0f} MiB (16 connections): {keys['alone_MBps']} "
              f"MB/s without the TUI, {keys['idle_MBps']} MB/s in the TUI watching Transfers, "
              f"{keys['keys_MBps']} MB/s while keys switch screens every {args.gap * 1000:.0f} ms")
        print(f"key-to-paint during that pull ({keys['keys']} screen switches): median "
              f"{keys['median_ms']} ms, p95 {keys['p95_ms']} ms, max {keys['max_ms']} ms "
              f"(target p95 < 100 ms)")


if __name__ == "__main__":
    main()
