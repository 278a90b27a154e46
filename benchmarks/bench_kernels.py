"""The smoke runtime's fused kernels against the diffusers code they replace, alone, on a GPU.

    python benchmarks/bench_kernels.py [--tokens 9728] [--heads 24] [--width 3072]

Prints median milliseconds (device events) and the effective memory bandwidth of each fused
kernel and of diffusers' eager version at one step's shapes (defaults: FLUX.1 at 1536², 512
text tokens), and checks that both agree. A kernel far from the copy bandwidth is a bug here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profile_step import median_ms  # noqa: E402  (this folder is on sys.path when run as a script)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=9728)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--width", type=int, default=3072)
    args = parser.parse_args()
    import torch
    from diffusers.models.embeddings import apply_rotary_emb as eager_rope
    from diffusers.models.normalization import RMSNorm

    from modelmgr.smoke import triton_kernels
    from modelmgr.smoke.fused_norm import FusedRMSNorm
    from modelmgr.smoke.fused_rope import apply_rotary_emb as fused_rope

    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    head = args.width // args.heads
    q = torch.randn(1, args.tokens, args.heads, head, generator=gen, device="cuda").to(torch.bfloat16)
    angles = torch.rand(args.tokens, head // 2, generator=gen, device="cuda") * 6.3
    cos, sin = (f(angles).repeat_interleave(2, dim=1) for f in (torch.cos, torch.sin))
    x = torch.randn(args.tokens, args.width, generator=gen, device="cuda").to(torch.bfloat16)
    norm = RMSNorm(args.width, eps=1e-6).to("cuda", torch.bfloat16)
    fused_norm = FusedRMSNorm(norm)
    moved = 2 * q.numel() * q.element_size()  # read once, write once
    rows = []
    for name, eager, fused in (("rope", lambda: eager_rope(q, (cos, sin), sequence_dim=1),
                                lambda: fused_rope(q, (cos, sin), sequence_dim=1)),
                               ("rms_norm", lambda: norm(x), lambda: fused_norm(x))):
        want, got = eager(), fused()
        err = float((got.float() - want.float()).norm() / want.float().norm())
        e_ms, f_ms = median_ms(eager), median_ms(fused)
        rows.append({"kernel": name, "eager_ms": round(e_ms, 4), "fused_ms": round(f_ms, 4),
                     "speedup": round(e_ms / f_ms, 2), "fused_gb_s": round(moved / f_ms / 1e6, 1),
                     "rel_err": err})
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "shape": vars(args), "kernels": rows,
                      "paths": triton_kernels.status()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
