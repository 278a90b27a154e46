"""Mutation fuzzer for the header inspector: any exception other than BadFileError is a bug.

Inputs come from two sources. Seeds: small valid files of every kind the inspector reads
(safetensors in plain, legacy-scaled, comfy_quant and metadata-quantized forms; GGUF written by
gguf-py and by hand) plus the fixed malformed corpus, each case applying one to four mutations,
structure-aware ones included (JSON tokens in a safetensors header, with the length prefix fixed up
so the deeper checks run; integer fields in a GGUF header). Generators: structurally valid files
built from random decisive tensor names, dtypes, shapes, quantization configs, architectures and
file types, so that classification and family detection see odd but well-formed input (these
get zero to four byte mutations). Every case then calls the *unguarded* core, so the safety net that turns stray
exceptions into BadFileError cannot hide a parser bug. Cases slower than ``--slow`` seconds count
as findings too (the inspector must never hang).

    python tests/fuzz/fuzz_inspect.py --cases 100000 --seed 0

Exit status 1 when anything was found; reproducers go to ``--save`` when given.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from modelmgr.errors import BadFileError  # noqa: E402
from modelmgr.registry.inspect import _inspect_bytes  # noqa: E402
from tests.fixtures.model_files import (  # noqa: E402
    BITS,
    as_dtype,
    bad_cases,
    comfy_quant,
    edge_layers_bf16,
    flux1_layout,
    flux2_layout,
    fp8_scaled,
    qwen3_layout,
    safetensors_bytes,
    simple_gguf,
    vae_layout,
    write_gguf,
)

INTERESTING = [0, 1, 2, 7, 8, 31, 32, 33, 127, 128, 255, 256, 4095, 4096, 65535, 65536, 2**31 - 1, 2**31,
               2**32 - 1, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
JSON_SWAPS = [*BITS, "null", "true", "[]", "{}", '""', "-1", "1.5", "1e999", '"\\ud800"', "[0,0]", "[1]",
              "18446744073709551616", '"__metadata__"', '"format"', '"nvfp4"']
NAMES = ["fuzz.safetensors", "fuzz.gguf", "fuzz.bin", "<bytes>"]


def seeds(workdir: Path) -> list[bytes]:
    """Small valid files of every kind, and the malformed corpus."""
    tiny = flux1_layout(hidden=32, context=32, in_channels=32)
    out = [
        safetensors_bytes(tiny, {"k": "v"}),
        safetensors_bytes(as_dtype(tiny, "BF16", "F8_E4M3")),
        safetensors_bytes(fp8_scaled(tiny)),
        safetensors_bytes(comfy_quant(tiny, edge_layers_bf16("nvfp4"))[0]),
        safetensors_bytes(*comfy_quant(tiny, edge_layers_bf16("nvfp4"), in_metadata=True)),
        safetensors_bytes(comfy_quant(tiny, edge_layers_bf16("mxfp8"))[0]),
        safetensors_bytes(comfy_quant(tiny, edge_layers_bf16("float8_e4m3fn"))[0]),
        safetensors_bytes(qwen3_layout(hidden=64, vocab=8)),
        safetensors_bytes(vae_layout(latent=32, batch_norm=True)),
        simple_gguf(),
    ]
    logging.getLogger("gguf").setLevel(logging.ERROR)
    gguf_seeds = [(tiny, "flux", "Q8_0"), (flux2_layout("klein-4b", hidden=32), None, "F16"),
                  (qwen3_layout(hidden=64, vocab=8), "qwen3", "Q8_0")]
    for i, (layout, arch, qtype) in enumerate(gguf_seeds):
        path = write_gguf(workdir / f"seed{i}.gguf", layout, arch, qtype, file_type=7,
                          kv=[("tokenizer.ggml.tokens", ["a", "bb", "ccc"]), ("comfy.gguf.orig_shape.x", [1, 2])])
        out.append(path.read_bytes())
    return out + [case.data for case in bad_cases()]


ANCHORS = ["double_blocks.0.img_attn.norm.key_norm.scale", "img_in.weight", "txt_in.weight",
           "double_stream_modulation_img.lin.weight", "guidance_in.in_layer.weight", "cap_embedder.1.weight",
           "noise_refiner.0.attention.k_norm.weight", "text_model.encoder.layers.0.mlp.fc1.weight",
           "text_model.encoder.layers.30.mlp.fc1.weight", "encoder.block.0.layer.1.DenseReluDense.wi_1.weight",
           "encoder.block.23.layer.1.DenseReluDense.wi_1.weight", "model.layers.0.post_attention_layernorm.weight",
           "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_proj.bias",
           "model.layers.0.post_feedforward_layernorm.weight", "decoder.conv_in.weight", "bn.running_mean",
           "post_quant_conv.weight", "scaled_fp8", "l.weight", "l.scale_weight", "l.comfy_quant", "l.weight_scale",
           "l.weight_scale_2", "l.input_scale", "x.lora_A.weight", "token_embd.weight", "blk.0.attn_q.weight",
           "q.quant_state.bitsandbytes__nf4"]
PREFIXES = ["", "", "model.diffusion_model.", "first_stage_model.", "text_encoders.x.", "a.b."]
DIMS = [0, 1, 2, 3, 4, 16, 32, 64, 128, 256]
QUANT_CONFS = ['{"format":"nvfp4"}', '{"format":"float8_e4m3fn"}', '{"format":"mxfp8"}', '{"format":"int8_tensorwise"}',
               '{"format":"awq_w4a16"}', '{"format":"zz"}', '{"format":1}', "[]", "{", '{"format":"nvfp4","x":[]}']
ARCHS = ["flux", "lumina2", "qwen3", "qwen3vl", "t5", "t5encoder", "llama", "qwen2vl", "gemma3", "sd99", ""]


MAX_NUMEL = 8192


def _random_shape(rng: random.Random, max_dims: int = 4) -> tuple[int, ...]:
    """A few dims of interesting sizes, at most MAX_NUMEL elements so generated files stay small."""
    dims = [rng.choice(DIMS) for _ in range(min(max_dims, rng.choice([0, 1, 1, 2, 2, 2, 3, 4])))]
    while dims and _prod(dims) > MAX_NUMEL:
        dims[dims.index(max(dims))] = rng.choice(DIMS[:5])
    return tuple(dims)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def random_safetensors(rng: random.Random) -> bytes:
    """A structurally valid safetensors file with random decisive names, dtypes, shapes and quant metadata."""
    from tests.fixtures.model_files import T

    tensors = {}
    for _ in range(rng.randint(0, 12)):
        name = rng.choice(PREFIXES) + rng.choice(ANCHORS)
        if name.endswith("comfy_quant"):
            raw = rng.choice(QUANT_CONFS).encode()
            tensors[name] = T("U8", (len(raw),), raw)
            continue
        dtype = rng.choice([*BITS, "BF16", "F8_E4M3", "U8", "F32"])
        shape = _random_shape(rng)
        if BITS[dtype] < 8 and shape and shape[-1] % 2:
            shape = shape[:-1] + (shape[-1] + 1,)
        if BITS[dtype] == 6 and (_prod(shape) * 6) % 8:
            dtype = "U8"
        tensors[name] = T(dtype, shape)
    metadata = None
    if rng.random() < 0.4:
        layers = {rng.choice(["l", "img_in", "nope", "model.diffusion_model.l"]): json.loads(c) if c[0] == "{" and
                  c.endswith("}") and c != "{" else c for c in rng.sample(QUANT_CONFS, 2)}
        metadata = {"_quantization_metadata": rng.choice([json.dumps({"layers": layers}), "{", "[]", '{"layers":[]}'])}
    return safetensors_bytes(tensors, metadata)


def random_gguf(rng: random.Random) -> bytes:
    """A structurally valid GGUF with random names, types, dims, architecture and file type."""
    from modelmgr.registry.inspect.gguf import GGML_TYPES
    from tests.fixtures.model_files import gguf_bytes, gguf_kv, gguf_str, gguf_tensor_info, gguf_u32

    alignment = rng.choice([1, 8, 32, 32, 64])
    kvs = [gguf_u32("general.alignment", alignment),
           gguf_u32("general.file_type", rng.choice([0, 1, 7, 15, 32, 99, 1024]))]
    if rng.random() < 0.8:
        kvs.append(gguf_str("general.architecture", rng.choice(ARCHS)))
    infos, offset = [], 0
    names = [rng.choice(PREFIXES[:3]) + rng.choice(ANCHORS) for _ in range(rng.randint(0, 10))]
    for name in dict.fromkeys(names):
        type_id = rng.choice(list(GGML_TYPES))
        _, block, size = GGML_TYPES[type_id]
        ne = [block * rng.choice([0, 1, 2]), *_random_shape(rng, max_dims=3)]
        numel = _prod(ne)
        if rng.random() < 0.2:
            shape = struct.pack("<IQ", 5, 2) + struct.pack("<2i", rng.choice([1, numel or 1]), 1)
            kvs.append(gguf_kv(f"comfy.gguf.orig_shape.{name}", 9, shape))
        infos.append(gguf_tensor_info(name, tuple(ne), type_id, offset))
        offset += numel // block * size
        offset += -offset % alignment
    return gguf_bytes(kvs, infos, bytes(offset), alignment=alignment)


def header_end(data: bytes) -> int:
    """Roughly where the header ends, so that most mutations land where parsing happens."""
    if data[:4] == b"GGUF":
        return min(len(data), 4096)
    if len(data) >= 8:
        (n,) = struct.unpack_from("<Q", data)
        return min(len(data), 8 + n) if n < len(data) else len(data)
    return len(data)


def mutate_json(data: bytearray, rng: random.Random) -> bytearray:
    """Swap one JSON token of a safetensors header and fix the length prefix."""
    (n,) = struct.unpack_from("<Q", data)
    if not 2 <= n <= len(data) - 8:
        return data
    text = data[8 : 8 + n].decode("utf-8", "replace")
    tokens = list(re.finditer(r'"[^"]*"|-?\d+(?:\.\d+)?|[\[\]{},:]', text))
    if not tokens:
        return data
    token = rng.choice(tokens)
    choice = rng.random()
    if choice < 0.5:
        replacement = rng.choice(JSON_SWAPS)
        replacement = f'"{replacement}"' if replacement in BITS else replacement
    elif choice < 0.75:
        replacement = str(rng.choice(INTERESTING) + rng.choice([-1, 0, 1]))
    elif choice < 0.9:
        replacement = ""
    else:
        replacement = token.group() * 2
    text = text[: token.start()] + replacement + text[token.end():]
    raw = text.encode("utf-8", "surrogatepass")
    return bytearray(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def mutate(data: bytearray, rng: random.Random) -> bytearray:
    end = max(1, header_end(data))
    pos = rng.randrange(end) if rng.random() < 0.9 or len(data) <= end else rng.randrange(len(data))
    kind = rng.randrange(9)
    if kind == 0 and data:
        data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
    elif kind == 1 and data:
        data[min(pos, len(data) - 1)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, ord("{"), ord('"'), ord("\\")])
    elif kind == 2:
        width = rng.choice([4, 8])
        value = (rng.choice(INTERESTING) + rng.choice([-1, 0, 1, len(data)])) % (1 << (8 * width))
        if data[:4] == b"GGUF" and rng.random() < 0.5:
            pos -= pos % 4
        data[pos : pos + width] = value.to_bytes(width, "little")
    elif kind == 3:
        del data[pos : pos + rng.randrange(1, 64)]
    elif kind == 4:
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == 5:
        start = rng.randrange(len(data) or 1)
        data[pos:pos] = data[start : start + rng.randrange(1, 128)]
    elif kind == 6:
        del data[rng.randrange(len(data) + 1):]
    elif kind == 7:
        data += bytes(rng.randrange(1, 64))
    elif data[:4] != b"GGUF" and len(data) > 9:
        data = mutate_json(data, rng)
    return data


def run(cases: int, seed: int, slow: float, save: Path | None) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = seeds(Path(tmp))
    outcomes: Counter[str] = Counter()
    findings: list[tuple[str, str, bytes]] = []
    slowest = 0.0
    started = time.perf_counter()
    for index in range(cases):
        pick = rng.random()
        if pick < 0.15:
            data = bytearray(random_safetensors(rng))
        elif pick < 0.3:
            data = bytearray(random_gguf(rng))
        else:
            data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(0 if pick < 0.3 else 1, 4)):
            data = mutate(data, rng)
        blob = bytes(data)
        size = len(blob) + (rng.choice([1, 8, 4096, 2**40]) if rng.random() < 0.1 else 0)
        name = rng.choice(NAMES)
        kind = "gguf" if blob[:4] in (b"GGUF", b"FUGG") else "safetensors"
        t0 = time.perf_counter()
        try:
            _inspect_bytes(blob, size, name)
            outcomes[f"{kind} accepted"] += 1
        except BadFileError:
            outcomes[f"{kind} BadFileError"] += 1
        except Exception as err:  # the point of the exercise
            outcomes[f"{kind} {type(err).__name__}"] += 1
            findings.append((f"case {index}: {type(err).__name__}: {err}"[:300], name, blob))
        elapsed = time.perf_counter() - t0
        slowest = max(slowest, elapsed)
        if elapsed > slow:
            findings.append((f"case {index}: took {elapsed:.2f}s", name, blob))
    total = time.perf_counter() - started

    print(f"{cases} cases in {total:.1f}s = {cases / total:,.0f} cases/s (seed {seed}, {len(corpus)} seeds)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print(f"slowest case: {slowest * 1000:.1f} ms")
    for i, (what, name, blob) in enumerate(findings[:20]):
        print(f"FINDING {what} [{name}, {len(blob)} bytes]")
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"finding-{i}.bin").write_bytes(blob)
            (save / f"finding-{i}.json").write_text(json.dumps({"what": what, "name": name}))
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="number of mutated inputs (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, for reproducible runs")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds after which one case counts as a hang")
    parser.add_argument("--save", type=Path, default=None, help="folder for reproducers of findings")
    args = parser.parse_args(argv)
    return run(args.cases, args.seed, args.slow, args.save)


if __name__ == "__main__":
    sys.exit(main())
