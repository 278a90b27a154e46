"""HfSource against a loopback Hub: pinning, exact metadata, and every error a user can meet."""

from __future__ import annotations

import hashlib
import os

import pytest

from modelmgr.errors import AuthError, NotFoundError, RemoteError, UnsafePathError, UsageError
from modelmgr.sources.base import origin_of
from modelmgr.sources.hf import HfSource
from tests.servers import HubServer

WEIGHTS = os.urandom(4096)
TOKEN = "hf_loopback_token"
OTHER = "hf_valid_but_not_granted"


@pytest.fixture
async def hub():
    async with HubServer(token=TOKEN) as server:
        server.valid_tokens.add(OTHER)
        server.add_repo("org/model", {
            "README.md": b"# readme",
            "split_files/diffusion_models/z_image_fp8.safetensors": WEIGHTS,
            "vae/ae.safetensors": WEIGHTS[:2048],
        })
        server.add_repo("org/gated", {"flux.safetensors": WEIGHTS}, gated=True)
        server.add_repo("org/private", {"p.safetensors": WEIGHTS}, private_token="hf_private")
        yield server


LFS_PATH = "split_files/diffusion_models/z_image_fp8.safetensors"


def source(settings, repo="org/model", files=(LFS_PATH,), **kw) -> HfSource:
    return HfSource(settings, repo, list(files), **kw)


async def test_resolves_lfs_and_regular_files_pinned_to_the_commit(hub, make_settings):
    settings = make_settings(HF_ENDPOINT=hub.endpoint)
    lfs_path = LFS_PATH
    files = await source(settings, files=[lfs_path, "README.md"]).resolve()
    commit = hub.repos[("model", "org/model")].refs["main"]
    lfs, readme = files
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    assert lfs.url == f"{hub.endpoint}/org/model/resolve/{commit}/{lfs_path}"
    assert (lfs.name, lfs.size, lfs.sha256, lfs.etag, lfs.revision) == (
        lfs_path, len(WEIGHTS), sha, sha, commit)
    assert lfs.source == f"hf:org/model@{commit}/{lfs_path}"
    assert (lfs.credential, lfs.auth_origin) == ("hf", origin_of(hub.endpoint))
    assert lfs.size_is_exact and lfs.expected_hash == ("sha256", sha)
    assert (readme.size, readme.sha256) == (8, None)
    assert readme.etag == hub.file("org/model", "README.md").git_oid
    # Resolving downloads nothing and stays off the CDN.
    assert not hub.cdn.requests and not hub.requests_to("/org/model/resolve")


async def test_branch_tag_and_old_commit(hub, make_settings):
    settings = make_settings(HF_ENDPOINT=hub.endpoint)
    old = hub.repos[("model", "org/model")].refs["main"]
    hub.add_ref("org/model", "v1.0", old)
    new = hub.add_commit("org/model", {"vae/ae.safetensors": b"changed" * 300})
    [latest] = await source(settings, files=["vae/ae.safetensors"]).resolve()
    [tagged] = await source(settings, files=["vae/ae.safetensors"], revision="v1.0").resolve()
    [pinned] = await source(settings, files=["vae/ae.safetensors"], revision=old).resolve()
    assert (latest.revision, latest.size) == (new, 2100)
    assert tagged == pinned and (pinned.revision, pinned.size) == (old, 2048)


async def test_dataset_repo_prefix(hub, make_settings):
    hub.add_repo("org/data", {"clip/t5.safetensors": WEIGHTS}, repo_type="dataset")
    [f] = await HfSource(make_settings(HF_ENDPOINT=hub.endpoint), "org/data",
                         ["clip/t5.safetensors"], repo_type="dataset").resolve()
    assert f.url.startswith(f"{hub.endpoint}/datasets/org/data/resolve/")
    assert f.source.startswith("hf:datasets/org/data@")


async def test_quoted_paths(hub, make_settings):
    hub.add_commit("org/model", {"odd name+#1.safetensors": WEIGHTS})
    [f] = await source(make_settings(HF_ENDPOINT=hub.endpoint),
                       files=["odd name+#1.safetensors"]).resolve()
    assert f.url.endswith("/odd%20name%2B%231.safetensors") and f.name == "odd name+#1.safetensors"


async def test_gated_without_token(hub, make_settings):
    with pytest.raises(AuthError) as err:
        await source(make_settings(HF_ENDPOINT=hub.endpoint), "org/gated",
                     ["flux.safetensors"]).resolve()
    assert f"{hub.endpoint}/org/gated" in str(err.value) and "HF_TOKEN" in str(err.value)


async def test_gated_token_not_granted(hub, make_settings):
    with pytest.raises(AuthError) as err:
        await source(make_settings(HF_ENDPOINT=hub.endpoint, HF_TOKEN=OTHER), "org/gated",
                     ["flux.safetensors"]).resolve()
    assert "no access" in err.value.message and f"{hub.endpoint}/org/gated" in err.value.hint
    assert OTHER not in str(err.value)


async def test_gated_with_granted_token(hub, make_settings):
    [f] = await source(make_settings(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN), "org/gated",
                       ["flux.safetensors"]).resolve()
    assert f.size == len(WEIGHTS)
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in hub.requests)


async def test_private_repo_needs_its_token(hub, make_settings):
    with pytest.raises(NotFoundError) as err:
        await source(make_settings(HF_ENDPOINT=hub.endpoint), "org/private",
                     ["p.safetensors"]).resolve()
    assert "HF_TOKEN" in err.value.hint
    [f] = await source(make_settings(HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_private"),
                       "org/private", ["p.safetensors"]).resolve()
    assert f.size == len(WEIGHTS)


async def test_rejected_token(hub, make_settings):
    with pytest.raises(AuthError) as err:
        await source(make_settings(HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_bogus_secret")).resolve()
    assert "rejected" in err.value.message and "hf_bogus_secret" not in str(err.value)


async def test_unknown_repo_and_revision(hub, make_settings):
    settings = make_settings(HF_ENDPOINT=hub.endpoint)
    with pytest.raises(NotFoundError, match="hf:org/nope not found"):
        await source(settings, "org/nope").resolve()
    with pytest.raises(NotFoundError, match="revision 'v9' not found"):
        await source(settings, revision="v9").resolve()


async def test_missing_file_suggests_close_names(hub, make_settings):
    settings = make_settings(HF_ENDPOINT=hub.endpoint)
    with pytest.raises(NotFoundError) as err:
        await source(settings, files=["z_image_fp8.safetensors"]).resolve()
    assert "z_image_fp8.safetensors" in err.value.message
    assert "split_files/diffusion_models/z_image_fp8.safetensors" in err.value.hint
    with pytest.raises(NotFoundError) as err:
        await source(settings, files=["vae/ae.safetensor", "README.md"]).resolve()
    assert "vae/ae.safetensors" in err.value.hint
    with pytest.raises(NotFoundError, match="is a folder") as err:
        await source(settings, files=["vae"]).resolve()
    assert "vae/ae.safetensors" in err.value.hint


async def test_api_hiccup_is_retried(hub, make_settings):
    hub.fail_next("/api/models/org/model", 503)
    [f] = await source(make_settings(HF_ENDPOINT=hub.endpoint)).resolve()
    assert f.size == len(WEIGHTS)


async def test_persistent_server_error_is_a_remote_error(hub, make_settings):
    hub.fail_next("/api/models/org/model", 500, times=-1)
    with pytest.raises(RemoteError, match="HTTP 500"):
        await source(make_settings(HF_ENDPOINT=hub.endpoint)).resolve()
    assert len(hub.requests_to("/api/models/org/model")) == 3  # MODELMGR_MAX_RETRIES


async def test_long_rate_limit_fails_fast_with_the_wait(hub, make_settings):
    hub.fail_next("/api/models/", 429, {"RateLimit": '"api";r=0;t=120'}, times=-1)
    with pytest.raises(RemoteError) as err:
        await source(make_settings(HF_ENDPOINT=hub.endpoint)).resolve()
    assert "rate limit" in err.value.message and "120 s" in err.value.message
    assert "HF_TOKEN" in err.value.hint
    assert len(hub.requests) == 1


async def test_unreachable_endpoint(make_settings, closed_port_url):
    with pytest.raises(RemoteError, match="cannot reach") as err:
        await source(make_settings(HF_ENDPOINT=closed_port_url)).resolve()
    assert "HF_ENDPOINT" in err.value.hint


@pytest.mark.parametrize("repo,files,error", [
    ("not a repo", ["a"], UsageError), ("org/../x", ["a"], UsageError),
    ("org/model", [], UsageError), ("org/model", ["../escape.safetensors"], UnsafePathError),
    ("org/model", ["/abs.safetensors"], UnsafePathError),
])
async def test_bad_input(make_settings, repo, files, error):
    with pytest.raises(error):
        await HfSource(make_settings(), repo, files).resolve()
