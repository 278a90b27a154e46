"""Smoke runs on the CPU: every family in every format loads through diffusers' classes and
converters, samples, decodes, and lands near the BF16 run; bad files fail with one clear line."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from modelmgr.errors import BadFileError  # noqa: E402
from modelmgr.smoke.bench import run_bench  # noqa: E402
from modelmgr.smoke.runner import Options, run_variant  # noqa: E402
from modelmgr.smoke.targets import Target  # noqa: E402
from tests.fixtures.model_files import clip_layout, write_safetensors  # noqa: E402
from tests.smoke import tiny  # noqa: E402

VAE = {"flux1": "flux1-vae", "flux2": "flux2-vae", "z-image": "flux1-vae"}
OPTIONS = Options(width=64, height=64, steps=2)


@pytest.mark.parametrize("family", sorted(VAE))
def test_each_format_runs_and_stays_close_to_bf16(models, quantized, cpu, family, tmp_path):
    targets = [Target("bf16", models[family], vae=models[VAE[family]])]
    targets += [Target(fmt, quantized[(family, fmt)], vae=models[VAE[family]]) for fmt in ("fp8-scaled", "nvfp4", "q8_0")]
    report = run_bench(targets, Options(width=64, height=64, steps=2, image_dir=tmp_path), cpu)
    assert [r.error for r in report.rows] == [None] * 4
    assert report.baseline == "bf16" and report.quality_reference == "bf16"
    for row in report.rows:
        r = row.run.result
        assert r.finite and r.it_s > 0 and r.family == family and r.steps == 2
        assert r.verdict == "NO-REFERENCE" and "CPU" in r.reason and "not a GPU result" in r.device["label"]
        assert r.picture.startswith("decoded with") and row.run.png.startswith(b"\x89PNG")
        assert r.image and (tmp_path / r.image.split("/")[-1]).exists()
        if row.label != "bf16":
            assert "emulated" in r.layers  # no FP8/FP4 kernels on a CPU
            assert row.quality.latent_cos > 0.9, (row.label, row.quality)
    q8 = next(r for r in report.rows if r.label == "q8_0")
    assert q8.quality.latent_psnr > 30


def test_no_vae_gives_a_latent_preview(models, cpu):
    run = run_variant(Target("z", models["z-image"]), OPTIONS, cpu)
    assert run.result.picture == "latent preview (no VAE)" and run.image.shape == (64, 64, 3)
    assert run.result.conditioning.startswith("seeded embedding")


def test_same_seed_same_result(models, cpu):
    a = run_variant(Target("a", models["flux2"]), OPTIONS, cpu)
    b = run_variant(Target("b", models["flux2"]), OPTIONS, cpu)
    c = run_variant(Target("c", models["flux2"]), Options(width=64, height=64, steps=2, seed=1), cpu)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)


def _one_line(err: BadFileError) -> str:
    text = str(err)
    assert "\n" not in err.message and "Traceback" not in text
    return err.message


def test_bad_files_fail_with_one_line(models, cpu, tmp_path):
    def run(path):
        with pytest.raises(BadFileError) as info:
            run_variant(Target(path.name, path), OPTIONS, cpu)
        return _one_line(info.value)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(models["flux1"].read_bytes()[:-100])
    assert "truncated" in run(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not a model file")
    assert "garbage.safetensors" in run(garbage)

    assert "vae" in run(models["flux1-vae"])  # a VAE where a diffusion model belongs

    encoder = write_safetensors(tmp_path / "clip.safetensors", clip_layout())
    assert "text_encoder" in run(encoder)

    layout = tiny.LAYOUTS["flux1"]()
    del layout["txt_in.bias"]
    assert "txt_in.bias" in run(tiny.write(tmp_path / "incomplete.safetensors", layout))

    layout = tiny.LAYOUTS["z-image"]()
    layout["layers.0.attention.qkv.weight"] = tiny.T("BF16", (3 * 96, 48))
    assert "the model needs [96, 96]" in run(tiny.write(tmp_path / "wrong-shape.safetensors", layout))


def test_vae_of_the_wrong_family_is_refused(models, cpu):
    from modelmgr.smoke.vae import load_vae

    with pytest.raises(BadFileError, match="latent channels"):
        run_variant(Target("f2", models["flux2"], vae=models["flux1-vae"]), OPTIONS, cpu)
    with pytest.raises(BadFileError, match="not a FLUX.1 or FLUX.2 VAE"):
        load_vae(models["flux1"], "cpu")


def test_out_of_gpu_memory_is_a_clear_error_and_bench_goes_on(models, cpu, monkeypatch):
    from modelmgr.errors import UsageError
    from modelmgr.smoke import loader

    real_load = loader.load

    def load(model, device, **kw):
        if model.name == models["flux1"].name:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_load(model, device, **kw)

    monkeypatch.setattr(loader, "load", load)
    with pytest.raises(UsageError) as err:
        run_variant(Target("big", models["flux1"]), OPTIONS, cpu)
    assert f"out of GPU memory while loading {models['flux1'].name}" in err.value.message
    assert "smaller variant" in err.value.hint and "--resolution" in err.value.hint
    report = run_bench([Target("small", models["z-image"]), Target("big", models["flux1"])], OPTIONS, cpu)
    assert report.rows[0].error is None and "out of GPU memory" in report.rows[1].error
