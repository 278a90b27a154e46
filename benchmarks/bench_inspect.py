"""How long header inspection takes on real-sized files and on a folder of small ones.

Writes sparse files whose headers are the real thing (FLUX.1-dev and Z-Image layouts at their
real shapes, BF16, ComfyUI NVFP4 with per-layer ``comfy_quant`` tensors, and a GGUF Q8_0), sized
exactly like the real 12-24 GB files but holding only holes after the header, then times
``inspect_file`` on each (median of ``--runs``; target ≤ 20 ms), and times inspecting 1,000 small
files of mixed formats (target ≤ 2 s for the inspect calls alone).

    python benchmarks/bench_inspect.py [--dir /path/with/room/for/sparse/files] [--runs 21]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelmgr.registry.inspect import inspect_file  # noqa: E402
from tests.fixtures.model_files import (  # noqa: E402
    Layout,
    clip_layout,
    comfy_quant,
    edge_layers_bf16,
    flux1_layout,
    fp8_scaled,
    gguf_str,
    gguf_tensor_info,
    gguf_u32,
    qwen3_layout,
    vae_layout,
    write_any,
    write_gguf,
    write_safetensors,
    zimage_layout,
)

BIG_TARGET_S = 0.020
SMALL_TARGET_S = 2.0
FLUX1_DEV = dict(hidden=3072, context=4096, depth=19, single=38, head_dim=128)
ZIMAGE = dict(dim=3840, ffn=10240, layers=30, refiners=2)


def sparse_gguf_q8(path: Path, layout: Layout, arch: str) -> Path:
    """A GGUF header for ``layout`` in ComfyUI-GGUF's Q8_0 policy, data left as holes."""
    kvs = [gguf_str("general.architecture", arch), gguf_u32("general.file_type", 7), gguf_u32("general.alignment", 32)]
    infos, offset = [], 0
    for name, t in layout.items():
        quantize = len(t.shape) >= 2 and t.numel > 1024 and t.shape[-1] % 32 == 0
        type_id, nbytes = (8, t.numel // 32 * 34) if quantize else (0, t.numel * 4)
        infos.append(gguf_tensor_info(name, tuple(reversed(t.shape)), type_id, offset))
        offset += nbytes + (-nbytes % 32)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += bytes(-len(head) % 32)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + offset)
    return path


def big_files(folder: Path) -> dict[str, Path]:
    flux = flux1_layout(**FLUX1_DEV)
    nvfp4, _ = comfy_quant(flux, edge_layers_bf16("nvfp4"))
    return {
        "flux1-dev bf16": write_safetensors(folder / "flux1-dev-bf16.safetensors", flux),
        "flux1-dev fp8-scaled": write_safetensors(folder / "flux1-dev-fp8-scaled.safetensors", fp8_scaled(flux)),
        "flux1-dev nvfp4 (comfy_quant)": write_safetensors(folder / "flux1-dev-nvfp4.safetensors", nvfp4),
        "z-image bf16": write_safetensors(folder / "z-image-bf16.safetensors", zimage_layout(**ZIMAGE)),
        "flux1-dev gguf q8_0": sparse_gguf_q8(folder / "flux1-dev-Q8_0.gguf", flux, "flux"),
    }


def small_files(folder: Path, count: int) -> list[Path]:
    """``count`` small files cycling through formats and families (a few KB to a few MB each)."""
    logging.getLogger("gguf").setLevel(logging.ERROR)
    makers = [
        lambda p: write_any(p.with_suffix(".safetensors"), flux1_layout()),
        lambda p: write_any(p.with_suffix(".safetensors"), *comfy_quant(flux1_layout(), edge_layers_bf16("nvfp4"))),
        lambda p: write_any(p.with_suffix(".safetensors"), fp8_scaled(flux1_layout(dev=False))),
        lambda p: write_any(p.with_suffix(".safetensors"), qwen3_layout(layers=4)),
        lambda p: write_any(p.with_suffix(".safetensors"), clip_layout()),
        lambda p: write_any(p.with_suffix(".safetensors"), vae_layout()),
        lambda p: write_gguf(p.with_suffix(".gguf"), flux1_layout(hidden=32, context=32, in_channels=32), "flux",
                             "Q8_0"),
    ]
    templates = [make(folder / f"template{i}") for i, make in enumerate(makers)]
    out = []
    for i in range(count):
        source = templates[i % len(templates)]
        target = folder / f"small{i:04d}{source.suffix}"
        target.write_bytes(source.read_bytes())
        out.append(target)
    return out


def time_one(path: Path, runs: int) -> tuple[float, float, float]:
    """(first call, median, max) in seconds; the first call includes any cold page-cache read."""
    t0 = time.perf_counter()
    inspect_file(path)
    first = time.perf_counter() - t0
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        inspect_file(path)
        samples.append(time.perf_counter() - t0)
    return first, statistics.median(samples), max(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write the sparse files (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=21, help="timed runs per big file (median reported)")
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    args = parser.parse_args(argv)

    ok = True
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"{'file':32} {'size':>9} {'tensors':>7} {'header':>9} {'precision':>11} "
              f"{'first':>8} {'median':>8} {'max':>8}")
        for label, path in big_files(folder).items():
            ins = inspect_file(path)
            first, median, worst = time_one(path, args.runs)
            ok &= median <= BIG_TARGET_S
            print(f"{label:32} {ins.file_size / 1e9:7.2f}GB {ins.tensor_count:7} {ins.header_size / 1024:7.0f}KiB "
                  f"{ins.precision:>11} {first * 1e3:6.2f}ms {median * 1e3:6.2f}ms {worst * 1e3:6.2f}ms")
        print(f"target: median ≤ {BIG_TARGET_S * 1e3:.0f} ms per file")

        paths = small_files(folder, args.small)
        rounds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for path in paths:
                inspect_file(path)
            rounds.append(time.perf_counter() - t0)
        best = min(rounds)
        ok &= statistics.median(rounds) <= SMALL_TARGET_S
        print(f"{len(paths)} small files: median {statistics.median(rounds):.3f} s, best {best:.3f} s "
              f"({best / len(paths) * 1e3:.2f} ms/file); target ≤ {SMALL_TARGET_S:.0f} s")
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
