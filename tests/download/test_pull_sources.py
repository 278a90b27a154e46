"""Whole pulls through the loopback Hub and CivitAI: the service façade resolves, the engine
downloads through the redirect, and the credential never reaches the download host."""

from __future__ import annotations

import asyncio
import json

import pytest

from modelmgr.download.progress import ProgressHub
from modelmgr.errors import AuthError, ExitCode, IntegrityError
from modelmgr.service import ModelManager
from tests.procs import cli_env, run_cli
from tests.servers import CivitaiFile, CivitaiServer, HubServer

from .helpers import KiB, MiB, fast_settings, payload, read, sha256

WEIGHTS = payload(3 * MiB + 1, seed=11)
CONFIG = b'{"model_type": "test"}'


@pytest.fixture
async def hub():
    async with HubServer() as server:
        server.add_repo("org/model", {"split_files/vae/ae.safetensors": WEIGHTS,
                                      "config.json": CONFIG})
        server.add_repo("org/gated", {"weights.safetensors": WEIGHTS}, gated=True)
        yield server


def hub_settings(hub: HubServer, token: str | None = None, **kw):
    return fast_settings(hf_endpoint=hub.endpoint, hf_token=token, **kw)


async def test_hf_pull_pins_commit_verifies_and_keeps_token_off_the_cdn(hub, tmp_path):
    manager = ModelManager(hub_settings(hub, hub.token, connections=4))
    remotes = await manager.resolve_hf("org/gated", ["weights.safetensors"])
    [result] = await manager.pull(remotes, tmp_path)
    assert result.error is None, result.error
    assert result.hashes["sha256"] == sha256(WEIGHTS)
    assert result.revision == hub.repos[("model", "org/gated")].refs["main"]
    assert read(tmp_path / "weights.safetensors") == WEIGHTS
    # the Hub saw the token; the CDN (another origin, S3-like: it rejects any Authorization)
    # never did, yet served every part
    assert any(r.header("authorization") == f"Bearer {hub.token}" for r in hub.requests)
    cdn_data = [r for r in hub.cdn.requests if r.method == "GET"]
    assert len(cdn_data) >= 2
    assert all(r.header("authorization") is None for r in hub.cdn.requests)


async def test_hf_pull_of_nested_and_small_files(hub, tmp_path):
    manager = ModelManager(hub_settings(hub))
    remotes = await manager.resolve_hf("org/model", ["split_files/vae/ae.safetensors",
                                                     "config.json"])
    results = await manager.pull(remotes, tmp_path)
    assert [r.error for r in results] == [None, None]
    assert read(tmp_path / "split_files/vae/ae.safetensors") == WEIGHTS
    assert read(tmp_path / "config.json") == CONFIG


async def test_expired_signed_url_is_resolved_again(hub, tmp_path):
    hub.cdn.per_connection_rate = 1 * MiB
    hub_progress = ProgressHub()
    manager = ModelManager(hub_settings(hub, connections=2), hub_progress)
    remotes = await manager.resolve_hf("org/model", ["split_files/vae/ae.safetensors"])
    task = asyncio.create_task(manager.pull(remotes, tmp_path))
    for _ in range(300):
        await asyncio.sleep(0.01)
        if hub_progress.file(remotes[0].name).done > 256 * KiB:
            break
    hub.cdn.expire_signed_urls()
    hub.cdn.per_connection_rate = None
    [result] = await asyncio.wait_for(task, 30)
    assert result.error is None, result.error
    assert read(tmp_path / "split_files/vae/ae.safetensors") == WEIGHTS
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert len(resolves) >= 2  # the probe, and at least one re-resolve after the 403s


async def test_cli_pull_hf_gated_without_token_says_what_to_do(hub, tmp_path):
    env = cli_env(HF_ENDPOINT=hub.endpoint)
    code, out, err = await run_cli("pull", "hf", "org/gated", "weights.safetensors", "--dest",
                                   str(tmp_path), env=env)
    assert code == ExitCode.AUTH
    assert "HF_TOKEN" in err and f"{hub.endpoint}/org/gated" in err and "Traceback" not in err
    code, out, err = await run_cli("pull", "hf", "org/model", "split_files/vae/ae.safetensor",
                                   "--dest", str(tmp_path), env=env)
    assert code == ExitCode.NOT_FOUND and "split_files/vae/ae.safetensors" in err
    code, out, err = await run_cli("pull", "hf", "org/gated", "weights.safetensors", "--dest",
                                   str(tmp_path), "--json", env=cli_env(HF_ENDPOINT=hub.endpoint,
                                                                        HF_TOKEN=hub.token))
    assert code == 0, err
    assert hub.token not in out + err
    assert json.loads(out)["files"][0]["hashes"]["sha256"] == sha256(WEIGHTS)


@pytest.fixture
async def civ():
    async with CivitaiServer() as server:
        server.add_version(456, 123, [CivitaiFile(12, "model.safetensors", WEIGHTS, primary=True),
                                      CivitaiFile(13, "vae.safetensors", CONFIG * 100,
                                                  type="VAE")])
        server.add_version(457, 124, [CivitaiFile(21, "locked.safetensors", WEIGHTS,
                                                  primary=True)], login_required=True)
        server.add_version(458, 125, [CivitaiFile(31, "liar.safetensors", WEIGHTS, primary=True,
                                                  sha256="ab" * 32)])
        yield server


def civ_settings(civ: CivitaiServer, token: str | None = None):
    return fast_settings(civitai_base_url=civ.base_url, civitai_token=token, connections=4)


async def test_civitai_pull_keeps_the_key_off_storage(civ, tmp_path):
    manager = ModelManager(civ_settings(civ, civ.token))
    remotes = await manager.resolve_civitai(f"{civ.base_url}/models/123?modelVersionId=456")
    [result] = await manager.pull(remotes, tmp_path)
    assert result.error is None, result.error
    assert read(tmp_path / "model.safetensors") == WEIGHTS
    assert all(r.header("authorization") is None and "token" not in r.query
               for r in civ.storage.requests)
    assert any(r.header("authorization") == f"Bearer {civ.token}" for r in civ.requests)


async def test_civitai_login_required_without_key_is_a_clear_auth_error(civ, tmp_path):
    manager = ModelManager(civ_settings(civ))
    remotes = await manager.resolve_civitai("457")
    [result] = await manager.pull(remotes, tmp_path)
    assert isinstance(result.error, AuthError)
    assert "CIVITAI_TOKEN" in (result.error.hint or "")
    assert list(tmp_path.glob("*.safetensors")) == []  # no login page saved as a model


async def test_civitai_wrong_published_hash_is_quarantined(civ, tmp_path):
    manager = ModelManager(civ_settings(civ))
    [result] = await manager.pull(await manager.resolve_civitai("458"), tmp_path)
    assert isinstance(result.error, IntegrityError)
    assert "ab" * 32 in result.error.message and sha256(WEIGHTS) in result.error.message
    assert not (tmp_path / "liar.safetensors").exists()


async def test_cli_pull_civitai_file_id(civ, tmp_path):
    code, out, err = await run_cli("pull", "civitai", "456", "--file-id", "13", "--dest",
                                   str(tmp_path), "--json",
                                   env=cli_env(MODELMGR_CIVITAI_URL=civ.base_url))
    assert code == 0, err
    assert json.loads(out)["files"][0]["name"] == "vae.safetensors"
    assert read(tmp_path / "vae.safetensors") == CONFIG * 100
