"""GPU evidence for the smoke test: full-size random-weight models through quantize, bench and
a bare diffusers forward, in one run. Results go to ``--out`` (JSON, HTML reports, a summary).

For each model (``--models zimage,flux1``):

1. write a BF16 checkpoint in ComfyUI's key layout at the real shapes (Z-Image-Turbo: dim 3840,
   30 layers, 2+2 refiners, 6.15 B parameters; FLUX.1-dev: width 3072, 19 + 38 blocks, 11.9 B),
   random weights generated on the GPU and streamed to local disk;
2. ``modelmgr quantize`` it to FP8-scaled, NVFP4 and Q8_0 (the CLI, as users run it);
3. ``modelmgr bench`` the variants at each resolution (the CLI, ``--json``), plus one FP8 smoke
   with dynamic activation scales for comparison;
4. time a *bare* diffusers forward of the same BF16 file in the same process tree: safetensors'
   own loader, diffusers' own converter and model class, the same inputs, no modelmgr layers;
5. with ``--text-encoder`` (Z-Image): write a random-weight Qwen3-4B in ComfyUI's layout and run
   ``modelmgr smoke BF16 --text-encoder FILE``: the real encoder on seeded token ids (no
   tokenizer on the machine), freed before the model loads;
6. check the targets: BF16 smoke it/s ≥ 0.95 × bare forward; FP8-scaled ≥ 1.25 × BF16 at the
   largest resolution; weights reach the GPU at ≥ 3 GB/s.

``--tiny`` runs the same pipeline on tiny checkpoints on the CPU (a plumbing check; the targets
are reported, not enforced). When the disk cannot hold every variant at once, the formats are
benched in turns (each with the BF16 run) and deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.model_files import T, flux1_layout  # noqa: E402
from tests.smoke.tiny import LAYOUTS, random_tensor, zimage_layout  # noqa: E402

EXT = {"fp8-scaled": "safetensors", "nvfp4": "safetensors", "q8_0": "gguf"}
SIZE_FACTOR = {"fp8-scaled": 0.52, "nvfp4": 0.30, "q8_0": 0.56}
"""Approximate output size over the BF16 input, for planning disk use."""
TARGETS = {"bf16_vs_bare": 0.95, "fp8_speedup": 1.25, "load_gb_s": 3.0}


def full_layout(model: str) -> dict[str, T]:
    if model == "zimage":
        return zimage_layout(dim=3840, head=128, layers=30, refiners=2, cap=2560)
    return flux1_layout(hidden=3072, context=4096, depth=19, single=38, head_dim=128)


QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936)
"""Z-Image's text encoder (Qwen3-4B: qwen_3_4b.safetensors, 4.0 B parameters)."""


def text_encoder_layout(tiny: bool) -> dict[str, T]:
    """Qwen3 in ComfyUI's key layout (``model.*``), shapes from transformers' own class: Qwen3-4B,
    or with ``tiny`` the tests' tiny Qwen3 (its width matches the tiny Z-Image's captions)."""
    import torch
    import transformers

    from tests.smoke.tiny import comfy_text_encoder_state, text_encoder_module

    with torch.device("meta"):
        if tiny:
            state = comfy_text_encoder_state("qwen3", text_encoder_module("qwen3"))
        else:
            state = {f"model.{k}": v for k, v in
                     transformers.Qwen3Model(transformers.Qwen3Config(**QWEN3_4B)).state_dict().items()}
    return {k: T("BF16", tuple(v.shape)) for k, v in state.items()}


def tiny_layout(model: str) -> dict[str, T]:
    return LAYOUTS["z-image" if model == "zimage" else "flux1"]()


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def generate(path: Path, layout: dict[str, T], device: str) -> dict:
    """Write the BF16 checkpoint tensor by tensor (generated on ``device``) with modelmgr's writer."""
    import torch

    from modelmgr.smoke.writers import SafetensorsWriter, Spec

    started = time.perf_counter()
    names = sorted(layout)
    writer = SafetensorsWriter(path, [Spec(n, layout[n].dtype, layout[n].shape) for n in names],
                               {"modelmgr.note": "random weights for GPU evidence"})
    gen = torch.Generator(device=device).manual_seed(0)
    params = 0
    for name in names:
        tensor = random_tensor(name, layout[name], gen, device)
        params += tensor.numel()
        writer.write(name, tensor.cpu())
    writer.finish()
    seconds = time.perf_counter() - started
    log(f"wrote {path.name}: {params / 1e9:.2f} B parameters, {path.stat().st_size / 1e9:.1f} GB in {seconds:.1f} s")
    return {"params": params, "bytes": path.stat().st_size, "seconds": seconds}


def cli(*args: str, root: Path) -> dict:
    """Run ``modelmgr ARGS --json`` and return its JSON (the log gets its stderr)."""
    env = dict(os.environ, MODELMGR_ROOT=str(root), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "modelmgr", *args, "--json"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.stderr.strip():
        print(proc.stderr.strip()[-3000:], flush=True)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {"error": proc.stdout[-2000:] or proc.stderr[-2000:]}
    doc["_exit"] = proc.returncode
    doc["_seconds"] = time.perf_counter() - started
    return doc


def bare_forward(path: Path, width: int, height: int, steps: int, device: str) -> dict:
    """it/s of diffusers' own model on the same file and inputs: safetensors + converter + class."""
    import gc

    import safetensors.torch
    import torch

    from modelmgr.smoke import arch as arch_mod
    from modelmgr.smoke import sampler
    from modelmgr.smoke.reader import open_model

    family = open_model(path).inspection.family
    started = time.perf_counter()
    state = safetensors.torch.load_file(str(path), device=device)
    arch = arch_mod.detect(family, {k: tuple(v.shape) for k, v in state.items()}, path.name)
    converted = arch.convert_fn()(state) if not arch.layouts else None
    if converted is None:  # tiny FLUX.1: diffusers' converter hard-codes width 3072
        from modelmgr.smoke.rowmap import apply_converter

        converted = apply_converter(arch.convert_fn(), state, path.name, arch.layouts)
    model = arch.build()
    model.load_state_dict(converted, strict=True, assign=True)
    model.eval().requires_grad_(False)
    load_s = time.perf_counter() - started
    dtype = torch.bfloat16
    cond = sampler.seeded_conditioning(arch, 0, device, dtype)
    shape = sampler.latent_shape(arch, width, height)
    runner = sampler.runner_for(arch, cond, shape, device, dtype)
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode():
        runner.velocity(model, x, 1.0)
        for i in range(steps):
            if cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                runner.velocity(model, x, 1.0 - i / steps)
                end.record()
                times.append((begin, end))
            else:
                t0 = time.perf_counter()
                runner.velocity(model, x, 1.0 - i / steps)
                times.append(time.perf_counter() - t0)
        if cuda:
            torch.cuda.synchronize()
            times = [b.elapsed_time(e) / 1000 for b, e in times]
    del model, state, converted
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"it_s": steps / sum(times), "load_s": load_s, "resolution": f"{width}x{height}", "steps": steps}


def text_encoder_run(bf16: Path, work: Path, root: Path, args, device: str) -> dict:
    """``modelmgr smoke BF16 --text-encoder QWEN3`` at the largest resolution; the file is deleted after."""
    te = work / "qwen_3_4b-random.safetensors"
    written = generate(te, text_encoder_layout(args.tiny), device)
    width, height = args.resolutions[-1]
    doc = cli("smoke", str(bf16), "--text-encoder", str(te), "--resolution", f"{width}x{height}", "--steps",
              str(args.steps), "--device", device, "--no-decode", root=root)
    te.unlink(missing_ok=True)
    r = doc.get("result") or {}
    log(f"text encoder: exit {doc['_exit']}, {r.get('conditioning')}; load {r.get('text_encoder_load_s')} s, "
        f"encode {r.get('text_encoder_encode_s')} s; model {r.get('it_s', 0):.3f} it/s, "
        f"peak {(r.get('peak_vram_bytes') or 0) / 2**30:.1f} GiB")
    return {"written": written, "smoke": doc}


def plan_phases(bf16_bytes: int, formats: list[str], work: Path) -> list[list[str]]:
    """Formats benched together while the disk holds them, else one at a time."""
    free = shutil.disk_usage(work).free
    need = sum(SIZE_FACTOR[f] * bf16_bytes for f in formats) * 1.05
    return [formats] if need < free else [[f] for f in formats]


def run_model(model: str, args, out: Path, device: str) -> dict:
    work = args.work / model
    root = args.work / "root"
    work.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    bf16 = work / f"{model}-bf16.safetensors"
    result: dict = {"model": model, "tiny": args.tiny}
    result["generate"] = generate(bf16, tiny_layout(model) if args.tiny else full_layout(model), device)
    result["quantize"], result["bench"], result["bare"] = {}, {}, {}
    resolutions = args.resolutions
    for phase in plan_phases(result["generate"]["bytes"], args.formats, args.work):
        files = []
        for fmt in phase:
            dst = work / f"{model}-{fmt}.{EXT[fmt]}"
            doc = cli("quantize", str(bf16), str(dst), "--to", fmt, "--device", device, "--force", root=root)
            result["quantize"][fmt] = doc
            log(f"quantize {fmt}: exit {doc['_exit']}, {doc.get('precision')}, {doc['_seconds']:.1f} s")
            if doc["_exit"] == 0:
                files.append(str(dst))
        for width, height in resolutions:
            res = f"{width}x{height}"
            report = out / f"bench-{model}-{res}-{'-'.join(phase)}.html"
            doc = cli("bench", str(bf16), *files, "--resolution", res, "--steps", str(args.steps), "--device", device,
                      "--report", str(report), "--no-decode", root=root)
            result["bench"].setdefault(res, []).append(doc)
            for v in doc.get("variants", []):
                r = v.get("result") or {}
                log(f"bench {res} {v['label']}: {r.get('it_s', 0):.3f} it/s, load {r.get('load_gb_s', 0):.2f} GB/s, "
                    f"peak {(r.get('peak_vram_bytes') or 0) / 2**30:.1f} GiB, {r.get('layers')} {v.get('error') or ''}")
        fp8 = next((f for f in files if "fp8-scaled" in f), None)
        if fp8:
            width, height = resolutions[-1]
            result["fp8_dynamic"] = cli("smoke", fp8, "--fp8-activations", "dynamic", "--resolution",
                                        f"{width}x{height}", "--steps", str(args.steps), "--device", device,
                                        "--no-decode", root=root)
            log(f"fp8 dynamic activations: {result['fp8_dynamic'].get('result', {}).get('it_s', 0):.3f} it/s")
        for f in files if not args.keep else []:
            Path(f).unlink(missing_ok=True)
    if args.text_encoder and model == "zimage":
        result["text_encoder"] = text_encoder_run(bf16, work, root, args, device)
    for width, height in resolutions:
        bare = bare_forward(bf16, width, height, args.steps, device)
        result["bare"][f"{width}x{height}"] = bare
        log(f"bare diffusers forward {width}x{height}: {bare['it_s']:.3f} it/s")
    if not args.keep:
        bf16.unlink(missing_ok=True)
    result["checks"] = checks(result)
    return result


def _variant(docs: list[dict], precision: str) -> dict | None:
    for doc in docs:
        for v in doc.get("variants", []):
            if (v.get("result") or {}).get("precision") == precision:
                return v["result"]
    return None


def checks(result: dict) -> list[dict]:
    out = []
    for res, docs in result["bench"].items():
        bf16 = _variant(docs, "bf16")
        fp8 = _variant(docs, "fp8-scaled")
        bare = result["bare"].get(res)
        if bf16 and bare:
            ratio = bf16["it_s"] / bare["it_s"]
            out.append({"check": f"BF16 smoke vs bare diffusers forward at {res}", "value": round(ratio, 3),
                        "target": TARGETS["bf16_vs_bare"], "ok": ratio >= TARGETS["bf16_vs_bare"]})
        if bf16 and fp8:
            ratio = fp8["it_s"] / bf16["it_s"]
            out.append({"check": f"FP8-scaled speedup over BF16 at {res}", "value": round(ratio, 3),
                        "target": TARGETS["fp8_speedup"], "ok": ratio >= TARGETS["fp8_speedup"]})
        if bf16:
            out.append({"check": f"BF16 load to the device at {res}", "value": round(bf16["load_gb_s"], 2),
                        "target": TARGETS["load_gb_s"], "ok": bf16["load_gb_s"] >= TARGETS["load_gb_s"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="zimage", help="zimage,flux1")
    parser.add_argument("--formats", default="fp8-scaled,nvfp4,q8_0")
    parser.add_argument("--resolutions", default=None, help="e.g. 1024x1024,1536x1536")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/modelmgr-gpu-evidence"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-evidence")))
    parser.add_argument("--text-encoder", action="store_true",
                        help="also condition Z-Image on a random-weight Qwen3-4B through modelmgr smoke")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints in --work (for profile_step.py)")
    parser.add_argument("--tiny", action="store_true", help="tiny checkpoints on the CPU (plumbing check)")
    args = parser.parse_args()
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda:0"
    args.formats = [f for f in args.formats.split(",") if f]
    res_text = args.resolutions or ("64x64" if args.tiny else "1024x1024,1536x1536")
    args.resolutions = [tuple(int(v) for v in r.split("x")) for r in res_text.split(",")]
    args.steps = args.steps or (2 if args.tiny else 8)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"device": torch.cuda.get_device_name(0) if device != "cpu" else "cpu", "torch": torch.__version__,
           "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv}
    log(f"evidence on {env['device']} (torch {env['torch']}, CUDA {env['cuda']})")
    summary = {"env": env, "models": {}}
    for model in [m for m in args.models.split(",") if m]:
        summary["models"][model] = run_model(model, args, args.out, device)
        (args.out / "gpu-evidence.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\nSUMMARY")
    failed = 0
    for model, res in summary["models"].items():
        for c in res["checks"]:
            failed += not c["ok"]
            print(f"  {model:7} {'OK  ' if c['ok'] else 'MISS'} {c['check']}: {c['value']} (target {c['target']})")
    return 0 if failed == 0 or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
