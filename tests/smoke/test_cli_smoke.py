"""``modelmgr smoke / bench / quantize`` as users run them: JSON and exit codes, a self-contained
HTML report, one-line errors without tracebacks, and the ``gpu`` extra named when it is missing."""

from __future__ import annotations

import json

import pytest

from modelmgr.errors import ExitCode
from tests.procs import cli_env, run_cli

pytest.importorskip("torch")
pytest.importorskip("diffusers")


async def test_smoke_json_and_bad_input(models, tmp_path):
    root = str(tmp_path / "root")
    code, out, err = await run_cli("smoke", str(models["flux1"]), "--vae", str(models["flux1-vae"]),
                                   "--root", root, "--json", timeout=120)
    assert code == 0, err
    doc = json.loads(out)["result"]
    assert doc["verdict"] == "NO-REFERENCE" and doc["finite"] and doc["family"] == "flux1"
    assert "not a GPU result" in doc["device"]["label"] and doc["image"].endswith(".png")
    assert (doc["width"], doc["height"], doc["steps"]) == (64, 64, 2)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    code, out, err = await run_cli("smoke", str(garbage), "--root", root, timeout=120)
    assert code == ExitCode.BAD_FILE and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    code, _, err = await run_cli("smoke", str(models["flux1"]), "--resolution", "64x", "--root", root)
    assert code == ExitCode.USAGE and "WxH" in err
    code, _, err = await run_cli("smoke", "no-such-bundle", "--root", root)
    assert code == ExitCode.NOT_FOUND and "Traceback" not in err


async def test_quantize_then_bench_writes_a_self_contained_report(models, tmp_path):
    out_file = tmp_path / "z-q8.gguf"
    code, out, err = await run_cli("quantize", str(models["z-image"]), str(out_file), "--to", "q8_0", "--json",
                                   timeout=120)
    assert code == 0, err
    assert json.loads(out)["precision"] == "gguf-q8_0"
    report = tmp_path / "report.html"
    code, out, err = await run_cli("bench", str(models["z-image"]), str(out_file), "--report", str(report),
                                   "--root", str(tmp_path / "root"), "--json", timeout=120)
    assert code == 0, err
    doc = json.loads(out)
    assert [v["error"] for v in doc["variants"]] == [None, None] and doc["quality_reference"].endswith(".safetensors")
    assert doc["variants"][1]["quality"]["latent_cos"] > 0.99
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2 and "type='range'" in page and "<script>" in page
    assert "http://" not in page and "https://" not in page and "src=\"//" not in page


async def test_missing_extra_is_named(tmp_path):
    blocker = tmp_path / "blocker"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed (test)')\n")
    env = cli_env(PYTHONPATH=str(blocker))
    code, out, err = await run_cli("smoke", "anything", "--root", str(tmp_path / "root"), env=env)
    assert code == ExitCode.USAGE and "pip install 'modelmgr[gpu]'" in err and "Traceback" not in err
    code, _, err = await run_cli("quantize", __file__, str(tmp_path / "o.gguf"), "--to", "q8_0", env=env)
    assert code == ExitCode.USAGE and "modelmgr[gpu]" in err
    code, out, _ = await run_cli("--help", env=env)
    assert code == 0 and "smoke" in out and "bench" in out and "quantize" in out
