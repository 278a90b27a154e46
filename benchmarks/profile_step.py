"""Where one sampling step's GPU time goes, per variant: the kernels of a step, grouped.

A diagnostic beside ``gpu_evidence.py``: it loads each file exactly as ``modelmgr smoke`` does
(loader + warm-up/calibration), runs one profiled step under ``torch.profiler`` and sums the CUDA
kernel time by kind (BF16 GEMM, FP8 GEMM, attention, activation quantization, norms/elementwise,
dequantization, ...). With ``--micro`` it also times the building blocks alone: each linear shape
in BF16 and FP8, the activation quantizer, and the attention backends at the step's sequence
length — so a gap between the step and the sum of its parts has a name.

    python benchmarks/profile_step.py FILE... [--resolution 1536x1536] [--micro] [--out DIR]

Files can come from ``gpu_evidence.py --keep`` or ``modelmgr quantize``. GPU only.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = (
    ("fp8 gemm", ("e4m3", "f8f8", "fp8", "scaled_mm", "sm90_xmma_gemm_e4m3")),
    ("attention", ("flash", "fmha", "attention", "cudnn_generated", "sdpa")),
    ("act quant", ("quantize_kernel", "quantize")),
    ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "sm90_")),
    ("norm", ("norm", "rms")),
    ("reduce", ("reduce",)),
    ("copy/cast", ("copy", "cast", "to_copy", "cat")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "pointwise", "triton_")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, needles in KINDS:
        if any(n in low for n in needles):
            return kind
    return "other"


def profile_file(path: Path, width: int, height: int, device: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from modelmgr.smoke import loader, sampler
    from modelmgr.smoke.gpu_info import describe
    from modelmgr.smoke.quant.fp8 import calibrate, release
    from modelmgr.smoke.reader import open_model

    info = describe(device)
    loaded = loader.load(open_model(path), info)
    arch = loaded.arch
    cond = sampler.seeded_conditioning(arch, 0, device, loaded.dtype)
    shape = sampler.latent_shape(arch, width, height)
    runner = sampler.runner_for(arch, cond, shape, device, loaded.dtype)
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        with calibrate(loaded.module):
            runner.velocity(loaded.module, x, 1.0)
        for _ in range(2):
            runner.velocity(loaded.module, x, 0.5)
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        runner.velocity(loaded.module, x, 0.5)
        end.record()
        torch.cuda.synchronize()
        step_ms = begin.elapsed_time(end)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner.velocity(loaded.module, x, 0.5)
            torch.cuda.synchronize()
        release()
    kinds: dict[str, float] = defaultdict(float)
    kernels: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", 0) or 0
        if us <= 0 or getattr(getattr(evt, "device_type", None), "name", "CUDA") != "CUDA":
            continue
        kinds[kind_of(evt.key)] += us / 1000
        kernels[evt.key][0] += us / 1000
        kernels[evt.key][1] += evt.count
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]
    out = {"file": path.name, "layers": loaded.formats_line(), "step_ms": round(step_ms, 2),
           "kernel_ms": round(sum(kinds.values()), 2),
           "by_kind_ms": {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
           "top_kernels": [{"name": n[:140], "ms": round(v[0], 3), "calls": v[1]} for n, v in top]}
    del loaded, runner, cond, x, prof
    gc.collect()
    torch.cuda.empty_cache()
    return out


def median_ms(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn`` (device events), after warm-up."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        b, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        b.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(b.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def micro(tokens: int, dim: int, hidden: int, heads: int, device: str) -> dict:
    """The step's building blocks alone, at its token count."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from modelmgr.smoke.quant import act_kernel

    out: dict = {"tokens": tokens, "gemm": [], "attention": {}, "quant": []}
    gen = torch.Generator(device=device).manual_seed(0)
    shapes = [("qkv (one of 3)", dim, dim), ("qkv fused", dim, 3 * dim), ("out", dim, dim),
              ("w1/w3 (one of 2)", dim, hidden), ("w1+w3 fused", dim, 2 * hidden), ("w2", hidden, dim)]
    for label, k, n in shapes:
        a = torch.randn(tokens, k, device=device, generator=gen, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, generator=gen, dtype=torch.bfloat16) / k ** 0.5
        flops = 2 * tokens * k * n
        bf16 = median_ms(lambda: F.linear(a, w))
        aq, wq = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        fp8 = median_ms(lambda: torch._scaled_mm(aq, wq.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                              use_fast_accum=True))
        inv = torch.ones(1, device=device)
        quant = median_ms(lambda: act_kernel.quantize(a, inv))
        out["gemm"].append({"shape": label, "k": k, "n": n, "bf16_ms": round(bf16, 3), "fp8_ms": round(fp8, 3),
                            "quant_ms": round(quant, 3), "bf16_tflops": round(flops / bf16 / 1e9, 1),
                            "fp8_tflops": round(flops / fp8 / 1e9, 1)})
    q, k, v = (torch.randn(1, heads, tokens, dim // heads, device=device, generator=gen, dtype=torch.bfloat16)
               for _ in range(3))
    flops = 4 * tokens * tokens * dim
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            out["attention"][name] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)}
        except RuntimeError as err:
            out["attention"][name] = {"error": str(err)[:160]}
    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    out["attention"]["default"] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--resolution", default="1536x1536")
    parser.add_argument("--micro", action="store_true", help="also time linears, quantizer and attention alone")
    parser.add_argument("--micro-shape", default="9472,3840,10240,30", help="tokens,dim,ffn hidden,heads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("profile_step.py needs a CUDA GPU", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.resolution.split("x"))
    doc = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "resolution": args.resolution, "argv": sys.argv, "variants": []}
    for path in args.files:
        res = profile_file(path, width, height, "cuda:0")
        doc["variants"].append(res)
        print(f"\n{res['file']} ({res['layers']}): step {res['step_ms']} ms, kernels {res['kernel_ms']} ms")
        for kind, ms in res["by_kind_ms"].items():
            print(f"  {kind:12} {ms:9.2f} ms")
        for k in res["top_kernels"][:12]:
            print(f"    {k['ms']:8.2f} ms {k['calls']:5}x {k['name'][:100]}")
    if args.micro:
        tokens, dim, hidden, heads = (int(v) for v in args.micro_shape.split(","))
        doc["micro"] = micro(tokens, dim, hidden, heads, "cuda:0")
        print(json.dumps(doc["micro"], indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile-step.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
