"""Text conditioning from the text encoder(s): tiny CLIP / T5 (plain and legacy FP8-scaled) / Qwen3 /
Mistral files in ComfyUI's key layouts, read back with configs inferred from their shapes, encoded
the way each family's diffusers pipeline does, with a tokenizer (given, embedded, cached) or on
seeded ids, and one-line errors for everything a user can get wrong."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from modelmgr.errors import BadFileError, ExitCode, MissingExtraError, NotFoundError, UsageError  # noqa: E402
from modelmgr.smoke import text  # noqa: E402
from modelmgr.smoke.bench import run_bench  # noqa: E402
from modelmgr.smoke.runner import Options, run_variant  # noqa: E402
from modelmgr.smoke.targets import Target  # noqa: E402
from modelmgr.smoke.text.encoders import config, load, open_encoder  # noqa: E402
from tests.fixtures.model_files import T, write_safetensors  # noqa: E402
from tests.procs import cli_env, run_cli  # noqa: E402
from tests.smoke import tiny  # noqa: E402

OPTIONS = Options(width=64, height=64, steps=2)
QWEN_SPECIALS = ("[UNK]", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


@pytest.fixture(autouse=True)
def no_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and offline mode: nothing from the host leaks in, nothing goes out."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def te(tmp_path_factory):
    """Tiny encoders and tokenizers, and diffusion models whose text widths match them."""
    folder = tmp_path_factory.mktemp("tiny-text-encoders")
    qwen_tok = tiny.word_tokenizer(300, first=QWEN_SPECIALS)
    embedded = torch.tensor(list(qwen_tok.to_str().encode()), dtype=torch.uint8)
    out = {
        "qwen3": tiny.write_text_encoder(folder / "qwen_3_4b.safetensors", "qwen3", hidden=64),
        "qwen3-embedded": tiny.write_text_encoder(folder / "qwen_3_4b_tok.safetensors", "qwen3", hidden=64,
                                                  extra={"tokenizer_json": embedded}),
        "t5": tiny.write_text_encoder(folder / "t5xxl_fp8_e4m3fn_scaled.safetensors", "t5", hidden=64, vocab=300,
                                      fp8_scaled=True),
        "clip": tiny.write_text_encoder(folder / "clip_l.safetensors", "clip", hidden=32, vocab=320),
        "mistral": tiny.write_text_encoder(folder / "mistral_3_small_flux2.safetensors", "mistral", hidden=16,
                                           layers=31),
    }
    flux1 = tiny.LAYOUTS["flux1"]()
    flux1["vector_in.in_layer.weight"] = T("BF16", (64, 32))  # CLIP width 32 instead of 768
    out["flux1"] = tiny.write(folder / "flux1.safetensors", flux1, seed=20)
    flux2 = tiny.LAYOUTS["flux2"]()
    flux2["txt_in.weight"] = T("BF16", (64, 48))  # 3 × Mistral width 16
    out["flux2"] = tiny.write(folder / "flux2.safetensors", flux2, seed=21)
    out["z-image"] = tiny.write(folder / "z-image.safetensors", tiny.zimage_layout(), seed=22)  # caption width 64

    (folder / "qwen-tokenizer").mkdir()
    qwen_tok.save(str(folder / "qwen-tokenizer" / "tokenizer.json"))
    out["qwen-tokenizer"] = folder / "qwen-tokenizer"
    pipeline = folder / "FLUX.1-dev"  # diffusers layout: tokenizer/ (CLIP), tokenizer_2/ (T5)
    (pipeline / "tokenizer").mkdir(parents=True)
    (pipeline / "tokenizer_2").mkdir()
    clip = tiny.word_tokenizer(320, last=("<|startoftext|>", "<|endoftext|>"), template="<|startoftext|> $A <|endoftext|>")
    clip.save(str(pipeline / "tokenizer" / "tokenizer.json"))
    tiny.word_tokenizer(300, first=("<pad>", "</s>", "[UNK]"), template="$A </s>").save(
        str(pipeline / "tokenizer_2" / "tokenizer.json"))
    out["flux-tokenizers"] = pipeline
    return out


def _encode(targets, **kw):
    kw = {"seed": 0, "prompt": None, "tokenizers": (), "device": "cpu", **kw}
    return text.encode(targets, **kw)


FIELDS = {"qwen3": ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size"),
          "t5": ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size", "relative_attention_num_buckets"),
          "clip": ("hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "vocab_size",
                   "hidden_act", "eos_token_id")}
FIELDS["mistral"] = FIELDS["qwen3"]


@pytest.mark.parametrize("kind", tiny.TE_KINDS)
def test_config_read_off_the_shapes_computes_what_the_original_did(kind, tmp_path):
    module = tiny.text_encoder_module(kind, hidden=32, layers=2, vocab=200).eval()
    for param in module.parameters():  # BF16 weights, as loaded; RoPE frequencies stay float32, as loaded
        param.data = param.data.to(torch.bfloat16)
    enc = open_encoder(tiny.write_text_encoder(tmp_path / f"{kind}.safetensors", kind, module=module))
    assert (enc.kind, enc.layers, enc.vocab) == (kind, 2, 200)
    inferred = config(enc, enc.layers)
    assert {f: getattr(inferred, f) for f in FIELDS[kind]} == {f: getattr(module.config, f) for f in FIELDS[kind]}
    loaded = load(enc, "cpu").module
    ids = torch.randint(0, 198, (1, 9), generator=torch.Generator().manual_seed(1))
    ids[0, -1] = 199  # CLIP pools at its EOS
    with torch.inference_mode():
        mine, theirs = loaded(input_ids=ids), module(input_ids=ids)
    assert torch.equal(mine.last_hidden_state, theirs.last_hidden_state)
    if kind == "clip":
        assert torch.equal(mine.pooler_output, theirs.pooler_output)


def test_mistral_small_3_widths_and_fp8_scaled_t5(te, tmp_path):
    # header only, at the real widths (sparse zeros): 32 heads and 8 kv heads of 128, 40 layers
    layout = {"model.embed_tokens.weight": T("BF16", (1000, 5120)),
              "model.layers.0.post_attention_layernorm.weight": T("BF16", (5120,)),
              "model.layers.0.self_attn.q_proj.weight": T("BF16", (4096, 5120)),
              "model.layers.0.self_attn.k_proj.weight": T("BF16", (1024, 5120)),
              "model.layers.0.mlp.gate_proj.weight": T("BF16", (32768, 5120)),
              "model.layers.39.input_layernorm.weight": T("BF16", (5120,))}
    enc = open_encoder(write_safetensors(tmp_path / "mistral.safetensors", layout))
    cfg = config(enc, enc.layers)
    assert (enc.kind, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == \
        ("mistral", 40, 32, 8, 128)

    enc = open_encoder(te["t5"])  # F8_E4M3 weights + scale_weight, dequantized to BF16 at load
    assert any(e.dtype == "F8_E4M3" for e in enc.model.header.tensors)
    module = load(enc, "cpu").module
    assert {p.dtype for p in module.parameters()} == {torch.bfloat16}


def test_zimage_runs_on_qwen3_seeded_given_embedded_or_cached_tokenizer(te, cpu, tmp_path, monkeypatch):
    target = Target("z", te["z-image"], text_encoders=(te["qwen3"],))
    run = run_variant(target, Options(width=64, height=64, steps=2, text_encoder=True), cpu)
    r = run.result
    assert r.conditioning == ("qwen_3_4b.safetensors on 64 seeded token ids (seed 0; no tokenizer: give "
                              "--tokenizer DIR)")
    assert r.finite and r.text_encoder_load_s > 0 and r.text_encoder_encode_s > 0
    seeded = _encode([target])
    assert seeded.text.shape == (1, 64, 64) and seeded.pooled is None  # the prompt's tokens only, hidden 64

    given = _encode([target], prompt="a red fox in snow", tokenizers=(te["qwen-tokenizer"],))
    assert given.source.startswith('qwen_3_4b.safetensors on the prompt "a red fox in snow" (')
    assert "--tokenizer" in given.source and not torch.equal(given.text[:, :5], seeded.text[:, :5])
    n_template = len("<|im_start|> user <|im_end|> <|im_start|> assistant".split())
    assert given.text.shape[1] == n_template + 5  # chat template + 5 words, no padding

    embedded = _encode([Target("z", te["z-image"], text_encoders=(te["qwen3-embedded"],))])
    assert 'default prompt "a photograph of a red fox' in embedded.source
    assert "embedded tokenizer_json" in embedded.source

    import huggingface_hub.constants  # a previous download of Z-Image's tokenizer, found offline
    snapshot = tmp_path / "hf-cache" / "models--Tongyi-MAI--Z-Image-Turbo" / "snapshots" / ("a" * 40) / "tokenizer"
    snapshot.mkdir(parents=True)
    shutil.copy(te["qwen-tokenizer"] / "tokenizer.json", snapshot)
    (snapshot.parents[2] / "refs").mkdir()
    (snapshot.parents[2] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    cached = _encode([target], prompt="a cat")
    assert "Hugging Face cache Tongyi-MAI/Z-Image-Turbo/tokenizer" in cached.source


def test_explicit_prompt_without_tokenizer_is_an_error_not_seeded_ids(te):
    target = Target("z", te["z-image"], text_encoders=(te["qwen3"],))
    with pytest.raises(UsageError) as info:
        _encode([target], prompt="a cat")
    err = info.value  # the CLI prints message and hint, exit code 2, no traceback (test_cli_smoke.py)
    assert "--prompt needs a tokenizer for qwen_3_4b.safetensors" in err.message and "--tokenizer DIR" in err.hint
    assert "\n" not in err.message and err.exit_code == ExitCode.USAGE


def test_flux1_t5_and_clip_from_a_pipeline_folder(te):
    target = Target("f", te["flux1"], text_encoders=(te["clip"], te["t5"]))  # any order
    cond = _encode([target], prompt="a red fox", tokenizers=(te["flux-tokenizers"],))
    assert cond.text.shape == (1, 512, 64) and cond.pooled.shape == (1, 32)
    assert cond.source.startswith("t5xxl_fp8_e4m3fn_scaled.safetensors + clip_l.safetensors on the prompt")
    assert '"a red fox" (4/5 tokens; tokenizers: --tokenizer ' in cond.source  # T5: 3 + </s>; CLIP: BOS 3 EOS
    assert "FLUX.1-dev/tokenizer_2, --tokenizer " in cond.source and cond.source.endswith("FLUX.1-dev/tokenizer)")


def test_flux2_reads_mistral_layers_10_20_30_and_bench_encodes_once(te, cpu, tmp_path, monkeypatch):
    calls = []
    real = text.encode
    monkeypatch.setattr(text, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    targets = [Target(n, te["flux2"], text_encoders=(te["mistral"],)) for n in ("a", "b")]
    report = run_bench(targets, Options(width=64, height=64, steps=2, text_encoder=True), cpu)
    assert calls == [1] and [r.error for r in report.rows] == [None, None]
    a, b = (r.run.result for r in report.rows)
    assert a.conditioning == b.conditioning and "mistral_3_small_flux2.safetensors on 64 seeded" in a.conditioning
    assert report.rows[1].quality.latent_cos > 0.999  # same model, same conditioning

    short = tiny.write_text_encoder(tmp_path / "mistral-12.safetensors", "mistral", hidden=16, layers=12)
    with pytest.raises(UsageError, match="has 12 layers; this model reads its hidden states 10, 20, 30"):
        _encode([Target("f", te["flux2"], text_encoders=(short,))])


def test_wrong_or_broken_text_encoders_fail_with_one_line(te, models, cpu, tmp_path):
    def fails(kind, encoders, model="z-image"):
        with pytest.raises(kind) as info:
            _encode([Target("m", te[model], text_encoders=tuple(encoders))])
        assert "\n" not in info.value.message and "Traceback" not in str(info.value)
        return info.value.message

    truncated = tmp_path / "qwen-truncated.safetensors"
    truncated.write_bytes(te["qwen3"].read_bytes()[:40])
    assert "qwen-truncated.safetensors" in fails(BadFileError, [truncated])
    assert "not a text encoder the smoke test runs" in fails(BadFileError, [models["flux1-vae"]])
    state = tiny.comfy_text_encoder_state("qwen3", tiny.text_encoder_module("qwen3", hidden=64))
    del state["model.layers.1.mlp.up_proj.weight"]
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "incomplete.safetensors"))
    assert "layers.1.mlp.up_proj.weight" in fails(BadFileError, [tmp_path / "incomplete.safetensors"])
    assert "FLUX.1 needs the text encoder(s) clip_l + t5xxl" in fails(UsageError, [te["qwen3"]], "flux1")
    assert "no text encoder to condition with" in fails(UsageError, [])
    narrow = tiny.write_text_encoder(tmp_path / "narrow.safetensors", "qwen3", hidden=32)
    with pytest.raises(UsageError, match="32-wide tokens; z-image.safetensors takes 64"):
        run_variant(Target("z", te["z-image"], text_encoders=(narrow,)),
                    Options(width=64, height=64, steps=2, text_encoder=True), cpu)


def test_missing_transformers_names_the_extra(te, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match="transformers"):
        _encode([Target("z", te["z-image"], text_encoders=(te["qwen3"],))])


def _bundle_yaml(name: str) -> str:
    return tiny.bundle_yaml(name, (("diffusion_model", "z.safetensors", "diffusion_models", "bf16"),
                                   ("text_encoder", "qwen_3_4b.safetensors", "text_encoders", "bf16")))


def test_bundle_text_encoder_found_or_named_with_the_pull_command(te, cpu, tmp_path):
    from modelmgr.service import ModelManager
    from modelmgr.settings import Settings
    from modelmgr.smoke.targets import resolve

    root = tmp_path / "models"
    (root / "diffusion_models").mkdir(parents=True)
    shutil.copy(te["z-image"], root / "diffusion_models" / "z.safetensors")
    (root / ".modelmgr" / "bundles").mkdir(parents=True)
    (root / ".modelmgr" / "bundles" / "bf16-tinyz.yaml").write_text(_bundle_yaml("bf16-tinyz"))
    manager = ModelManager(Settings.from_env({}, models_root=str(root)))
    try:
        target = resolve(manager, "bf16-tinyz")
        assert target.text_encoders == () and target.missing_text_encoders == ("text_encoders/qwen_3_4b.safetensors",)
        assert run_variant(target, OPTIONS, cpu).result.conditioning.startswith("seeded embedding")  # not asked for
        with pytest.raises(NotFoundError) as info:
            run_variant(target, Options(width=64, height=64, steps=2, text_encoder=True), cpu)
        assert "qwen_3_4b.safetensors is not installed" in info.value.message
        assert info.value.hint == "modelmgr pull bundle bf16-tinyz"

        (root / "text_encoders").mkdir()
        shutil.copy(te["qwen3"], root / "text_encoders" / "qwen_3_4b.safetensors")
        target = resolve(manager, "bf16-tinyz")
        assert target.text_encoders == (root / "text_encoders" / "qwen_3_4b.safetensors",)
        assert resolve(manager, "bf16-tinyz", text_encoders=(te["qwen3-embedded"],)).text_encoders == \
            (te["qwen3-embedded"],)
    finally:
        manager.close()


async def test_cli_smoke_with_two_text_encoders_reports_them_in_json(te, tmp_path):
    env = cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    code, out, err = await run_cli("smoke", str(te["flux1"]), "--text-encoder", str(te["t5"]), "--text-encoder",
                                   str(te["clip"]), "--root", str(tmp_path / "root"), "--json", env=env, timeout=120)
    assert code == 0, err
    doc = json.loads(out)["result"]
    assert doc["conditioning"].startswith("t5xxl_fp8_e4m3fn_scaled.safetensors + clip_l.safetensors on 64 seeded")
    assert doc["text_encoder_load_s"] > 0 and doc["text_encoder_encode_s"] > 0 and doc["finite"]


def test_on_the_gpu_the_encoder_is_gone_before_the_model_loads(te, cuda, tmp_path):
    big = tiny.write_text_encoder(tmp_path / "qwen-big.safetensors", "qwen3", hidden=64, vocab=200_000)  # 26 MB
    seeded = run_variant(Target("z", te["z-image"]), OPTIONS, cuda).result
    encoded = run_variant(Target("z", te["z-image"], text_encoders=(big,)),
                          Options(width=64, height=64, steps=2, text_encoder=True), cuda).result
    assert "qwen-big.safetensors on 64 seeded token ids" in encoded.conditioning and encoded.finite
    assert encoded.peak_vram_bytes < seeded.peak_vram_bytes + (4 << 20)  # the 26 MB encoder is not in the peak
