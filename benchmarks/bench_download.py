"""Side-by-side download benchmark: modelmgr vs aria2c vs huggingface_hub, one run, one file.

A loopback Hugging Face-compatible hub (tests/servers) serves one random file of ``--size`` bytes
from its LFS "CDN" on a second port. Each tool pulls the same file through the hub's resolve URL
(302 to the CDN), the way users run them:

* ``modelmgr pull hf``  (16 connections, streamed sha256 verified against the Hub's LFS oid)
* ``modelmgr pull url`` of the resolve URL with ``--sha256`` and, for the hashing-overhead ratio,
  with ``--no-hash``
* ``aria2c -x16 -s16 --checksum=sha-256=...`` (Debian package aria2; it re-reads the file to hash)
* ``huggingface_hub.hf_hub_download`` (one connection, no hash check)

Scenarios: ``capped`` (the CDN caps every connection, default 25 MB/s, like real CDNs) and
``uncapped`` (raw loopback). Every output is verified by sha256 afterwards (not timed). The table
shows MB/s, wall seconds, CPU seconds (user+sys of the tool's process tree), CPU seconds per GB
and peak RSS, then the ratios the project tracks. Run it from the repo root:

    python benchmarks/bench_download.py --size 2G --runs 1

It needs ``aria2c`` on PATH and GNU time at /usr/bin/time; tools that are missing are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelmgr.settings import _size  # noqa: E402
from tests.servers.base import run_in_thread  # noqa: E402
from tests.servers.hub import HubServer  # noqa: E402
from tests.servers.ranges import RangeServer  # noqa: E402

REPO = "bench/loopback-model"
FILE = "diffusion_models/model.safetensors"


@dataclass
class Run:
    scenario: str
    tool: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    ok: bool
    note: str = ""

    def mb_per_s(self, size: int) -> float:
        return size / 1e6 / self.seconds if self.seconds else 0.0


def make_payload(path: Path, size: int) -> str:
    """Write ``size`` random bytes (fast: one random MiB repeated with a counter) and hash them."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        written, i = 0, 0
        while written < size:
            chunk = (i.to_bytes(8, "little") + block[8:])[: size - written]
            fh.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            i += 1
    return digest.hexdigest()


def prime_memory(work: Path, size: int) -> None:
    """Write and delete ``size`` bytes once before measuring.

    On a VM whose memory is backed lazily, the first use of a page of guest memory costs far
    more than later uses (seen here: 2 GiB of page-cache writes took 4.8 s of system time the first
    time, 0.5 s after). Without this, whichever tool runs first pays for it.
    """
    scratch = work / "prime.bin"
    block = b"\0" * (8 << 20)
    with open(scratch, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
    scratch.unlink()
    subprocess.run(["sync"], check=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, int, str]:
    """Run under GNU time: (wall s, cpu s, peak RSS MB, exit code, stderr tail)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *cmd],
                              env=env, capture_output=True, text=True)
        fields = tf.read().split()[-4:]
    wall, user, system, rss_kb = (float(x) for x in fields)
    return wall, user + system, rss_kb / 1024, proc.returncode, (proc.stderr or "")[-400:]


def tool_commands(tool: str, hub: HubServer, out: Path, digest: str) -> list[str]:
    resolve = hub.resolve_url(REPO, FILE)
    py = sys.executable
    if tool == "modelmgr-hf":
        return [py, "-m", "modelmgr", "pull", "hf", REPO, FILE, "--dest", str(out),
                "--connections", "16", "--json"]
    if tool == "modelmgr-url":
        return [py, "-m", "modelmgr", "pull", "url", resolve, "--sha256", digest, "--dest",
                str(out), "--connections", "16", "--json"]
    if tool == "modelmgr-url-nohash":
        return [py, "-m", "modelmgr", "pull", "url", resolve, "--no-hash", "--dest", str(out),
                "--connections", "16", "--json"]
    if tool == "aria2c":
        return ["aria2c", "-x16", "-s16", f"--checksum=sha-256={digest}", "-d", str(out),
                "-o", "model.safetensors", "--console-log-level=warn", "--summary-interval=0",
                "--allow-overwrite=true", resolve]
    if tool == "hf_hub_download":
        code = ("import sys; from huggingface_hub import hf_hub_download as d; "
                f"d({REPO!r}, {FILE!r}, endpoint={hub.endpoint!r}, local_dir=sys.argv[1])")
        return [py, "-c", code, str(out)]
    raise ValueError(tool)


def output_file(tool: str, out: Path) -> Path:
    if tool in ("modelmgr-hf", "hf_hub_download"):
        return out / FILE
    return out / "model.safetensors"


def available(tool: str) -> bool:
    if tool == "aria2c":
        return shutil.which("aria2c") is not None
    if tool == "hf_hub_download":
        try:
            import huggingface_hub  # noqa: F401 - only: is it installed?
        except ImportError:
            return False
    return True


def bench(args: argparse.Namespace) -> dict:
    size = _size(args.size)
    cap = _size(args.cap)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "source.bin"
    print(f"writing {size / 2**30:.2f} GiB payload to {src} ...", flush=True)
    digest = make_payload(src, size)
    tools = [t for t in args.tools.split(",") if available(t)]
    prime_memory(work, 2 * size)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELMGR_"))}
    env.update({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(work / "hf-home"), "NO_COLOR": "1"})
    runs: list[Run] = []
    cdn = RangeServer(reject_auth=True, require_signature=True)
    hub = HubServer(cdn=cdn)
    with run_in_thread(hub):
        hub.add_repo(REPO, {FILE: src})
        env["HF_ENDPOINT"] = hub.endpoint
        for scenario in args.scenarios.split(","):
            cdn.per_connection_rate = cap if scenario == "capped" else None
            for rep in range(args.runs):
                for tool in (tools if rep % 2 == 0 else tools[::-1]):  # alternate the order
                    if scenario == "capped" and tool == "modelmgr-url-nohash":
                        continue
                    out = work / f"out-{tool}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    subprocess.run(["sync"], check=False)
                    wall, cpu, rss, code, err = timed(tool_commands(tool, hub, out, digest), env)
                    target = output_file(tool, out)
                    ok = code == 0 and target.exists() and sha256_file(target) == digest
                    runs.append(Run(scenario, tool, wall, cpu, rss, ok,
                                    "" if ok else f"exit {code}: {err.strip()[-200:]}"))
                    print(f"  {scenario:9s} {tool:20s} {size / 1e6 / wall:8.1f} MB/s "
                          f"{wall:7.2f} s cpu {cpu:6.2f} s rss {rss:6.1f} MB "
                          f"{'ok' if ok else 'FAILED ' + runs[-1].note}", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return summarize(runs, size, cap, args)


def summarize(runs: list[Run], size: int, cap: int, args: argparse.Namespace) -> dict:
    gb = size / 1e9
    table = {}
    for run in runs:
        table.setdefault((run.scenario, run.tool), []).append(run)
    rows = []
    for (scenario, tool), group in table.items():
        good = [r for r in group if r.ok] or group
        wall = statistics.median(r.seconds for r in good)
        cpu = statistics.median(r.cpu_seconds for r in good)
        rows.append({"scenario": scenario, "tool": tool, "mb_per_s": round(size / 1e6 / wall, 1),
                     "seconds": round(wall, 2), "cpu_s": round(cpu, 2),
                     "cpu_s_per_gb": round(cpu / gb, 2),
                     "peak_rss_mb": round(max(r.peak_rss_mb for r in good), 1),
                     "verified": all(r.ok for r in group)})

    def row(scenario: str, tool: str) -> dict | None:
        return next((r for r in rows if r["scenario"] == scenario and r["tool"] == tool), None)

    ratios = {}
    for scenario in ("capped", "uncapped"):
        mm, a2, hf = row(scenario, "modelmgr-hf"), row(scenario, "aria2c"), \
            row(scenario, "hf_hub_download")
        if mm and a2:
            ratios[f"{scenario}: modelmgr/aria2c speed"] = round(a2["seconds"] / mm["seconds"], 2)
            ratios[f"{scenario}: modelmgr/aria2c CPU per GB"] = round(
                mm["cpu_s_per_gb"] / a2["cpu_s_per_gb"], 2) if a2["cpu_s_per_gb"] else None
        if mm and hf:
            ratios[f"{scenario}: modelmgr/hf_hub_download speed"] = round(
                hf["seconds"] / mm["seconds"], 2)
    hashed, bare = row("uncapped", "modelmgr-url"), row("uncapped", "modelmgr-url-nohash")
    if hashed and bare:
        ratios["uncapped: streamed sha256 wall-time overhead"] = \
            f"{100 * (hashed['seconds'] / bare['seconds'] - 1):+.1f} %"
    return {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores, {platform.python_version()}",
            "size_bytes": size, "per_connection_cap": cap, "runs": args.runs,
            "command": " ".join(["python", "benchmarks/bench_download.py", *sys.argv[1:]]),
            "rows": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="2G", help="file size (default 2G)")
    parser.add_argument("--cap", default="25M", help="per-connection cap, capped scenario")
    parser.add_argument("--runs", type=int, default=1, help="repetitions (median reported)")
    parser.add_argument("--scenarios", default="capped,uncapped")
    parser.add_argument("--tools", default="modelmgr-hf,modelmgr-url,modelmgr-url-nohash,"
                                           "aria2c,hf_hub_download")
    parser.add_argument("--workdir", help="where to put the payload and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args()
    summary = bench(args)
    print()
    print(f"{'scenario':9s} {'tool':20s} {'MB/s':>8s} {'s':>7s} {'CPU s':>7s} {'CPU s/GB':>9s} "
          f"{'RSS MB':>7s} verified")
    for r in summary["rows"]:
        print(f"{r['scenario']:9s} {r['tool']:20s} {r['mb_per_s']:8.1f} {r['seconds']:7.2f} "
              f"{r['cpu_s']:7.2f} {r['cpu_s_per_gb']:9.2f} {r['peak_rss_mb']:7.1f} "
              f"{r['verified']}")
    print()
    for name, value in summary["ratios"].items():
        print(f"{name}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
