"""Library benchmarks: ``scan`` of 1,000 files and ``verify --deep`` against raw hashing speed.

* scan: 1,000 model files with real safetensors headers (sparse data) in ComfyUI folders are
  adopted by ``Library.scan``; then scanned again (nothing changed). Target: first scan <= 2 s.
* verify --deep: files totalling ``--deep-size`` bytes (real random data, in the page cache, as
  right after a download) are re-hashed by ``Library.verify(deep=True)``; the rate is compared with
  hashlib's sha256 over an in-memory buffer on one core. Target: >= 90 % of that.

    python benchmarks/bench_library.py [--files 1000] [--deep-size 2G]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelmgr.library.library import Library  # noqa: E402
from modelmgr.registry.store import Asset  # noqa: E402
from modelmgr.settings import _size  # noqa: E402
from tests.fixtures.model_files import (flux1_layout, vae_layout, write_safetensors,  # noqa: E402
                                        clip_layout)

FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints")


def make_scan_tree(root: Path, count: int) -> None:
    layouts = [flux1_layout(), clip_layout(), vae_layout()]
    for i in range(count):
        folder = root / FOLDERS[i % len(FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / f"model-{i:04d}.safetensors", layouts[i % len(layouts)])


def bench_scan(work: Path, count: int) -> dict:
    root = work / "scan-root"
    make_scan_tree(root, count)
    lib = Library(root)
    started = time.perf_counter()
    report = lib.scan()
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = lib.scan()
    second = time.perf_counter() - started
    lib.close()
    assert len(report.added) == count and again.unchanged == count, (report, again)
    return {"files": count, "first_scan_s": round(first, 3), "rescan_s": round(second, 3)}


def hashlib_single_core_rate(sample: int = 512 << 20) -> float:
    buf = os.urandom(64 << 20)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(sample // len(buf)):
        digest.update(buf)
    return sample / (time.perf_counter() - started)


def bench_verify_deep(work: Path, total: int, files: int = 4) -> dict:
    root = work / "deep-root"
    folder = root / "diffusion_models"
    folder.mkdir(parents=True)
    block = os.urandom(16 << 20)
    lib = Library(root)
    for i in range(files):
        path = folder / f"big-{i}.safetensors"
        header = b'{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (
            total // files, total // files)
        header += b" " * (-len(header) % 8)
        with open(path, "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
            left = total // files
            while left:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
        st = path.stat()
        lib.registry.upsert(Asset(path=f"diffusion_models/{path.name}", size=st.st_size,
                                  mtime_ns=st.st_mtime_ns))
    lib.verify(deep=True)  # records the hashes (first pass)
    report = lib.verify(deep=True)  # compares them: this is the timed pass
    lib.close()
    assert report.ok, report.results
    rate = report.bytes_hashed / report.seconds
    raw = hashlib_single_core_rate()
    return {"bytes": report.bytes_hashed, "verify_deep_MBps": round(rate / 1e6, 1),
            "hashlib_single_core_MBps": round(raw / 1e6, 1), "ratio": round(rate / raw, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--deep-size", default="2G")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mm-bench-lib-"))
    try:
        scan = bench_scan(work, args.files)
        print(f"scan: {scan['files']} files adopted in {scan['first_scan_s']} s "
              f"(target <= 2 s); rescan with nothing changed {scan['rescan_s']} s")
        deep = bench_verify_deep(work, _size(args.deep_size))
        print(f"verify --deep: {deep['verify_deep_MBps']} MB/s over {deep['bytes'] / 2**30:.2f} "
              f"GiB; hashlib sha256 on one core {deep['hashlib_single_core_MBps']} MB/s; "
              f"ratio {deep['ratio']:.2f} (target >= 0.90)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
