"""CivitaiSource against a loopback CivitAI: reference parsing, file choice, auth and errors."""

from __future__ import annotations

import hashlib
import os

import aiohttp
import blake3
import pytest

from modelmgr.errors import AuthError, NotFoundError, RemoteError, UnsafePathError, UsageError
from modelmgr.sources.base import origin_of
from modelmgr.sources.civitai import (
    CivitaiRef,
    CivitaiSource,
    civitai_download_error,
    parse_civitai_ref,
)
from tests.servers import CivitaiFile, CivitaiServer

MODEL = os.urandom(10_000)
VAE = os.urandom(3_000)
TOKEN = "civitai_loopback_token"


@pytest.fixture
async def civ():
    async with CivitaiServer(token=TOKEN) as server:
        server.add_version(456, 123, [CivitaiFile(11, "vae.safetensors", VAE, type="VAE"),
                                      CivitaiFile(12, "model.safetensors", MODEL, primary=True)])
        yield server


@pytest.fixture
def settings_for(make_settings):
    def make(civ: CivitaiServer, token: str | None = None):
        return make_settings(MODELMGR_CIVITAI_URL=civ.base_url, CIVITAI_TOKEN=token)

    return make


@pytest.mark.parametrize("text,expected", [
    ("456", CivitaiRef(version_id=456)),
    (" civitai:456 ", CivitaiRef(version_id=456)),
    ("civitai:456?fileId=12", CivitaiRef(version_id=456, file_id=12)),
    ("123@456", CivitaiRef(version_id=456, model_id=123)),
    ("urn:air:sdxl:checkpoint:civitai:123@456", CivitaiRef(version_id=456, model_id=123)),
    ("https://civitai.com/models/123", CivitaiRef(model_id=123)),
    ("https://civitai.com/models/123/some-slug", CivitaiRef(model_id=123)),
    ("https://civitai.com/models/123?modelVersionId=456", CivitaiRef(456, 123)),
    ("https://civitai.com/models/123/slug?modelVersionId=456", CivitaiRef(456, 123)),
    ("civitai.com/models/123?modelVersionId=456", CivitaiRef(456, 123)),
    ("https://civitai.com/api/download/models/456", CivitaiRef(version_id=456)),
    ("https://civitai.com/api/download/models/456?type=Model&format=SafeTensor",
     CivitaiRef(version_id=456)),
    ("https://civitai.com/api/download/models/456?fileId=12", CivitaiRef(456, None, 12)),
    ("https://civitai.com/api/v1/model-versions/456", CivitaiRef(version_id=456)),
    ("https://civitai.com/api/v1/models/123", CivitaiRef(model_id=123)),
    ("/models/123", CivitaiRef(model_id=123)),
    ("https://civitai.com/api/download/models/456?token=SECRET", CivitaiRef(version_id=456)),
])
def test_parse_refs(text, expected):
    assert parse_civitai_ref(text) == expected


@pytest.mark.parametrize("text", [
    "", "abc", "https://civitai.com/images/5", "https://civitai.com/models/abc",
    "https://civitai.com/models/0", "https://civitai.com/api/download/models/4?fileId=x",
    "https://civitai.com/user/x?token=SECRET",
])
def test_parse_rejects_with_a_usage_hint(text):
    with pytest.raises(UsageError) as err:
        parse_civitai_ref(text)
    assert "SECRET" not in str(err.value)


async def test_resolves_the_primary_file(civ, settings_for):
    [f] = await CivitaiSource(settings_for(civ), "456").resolve()
    assert f.url == f"{civ.base_url}/api/download/models/456?fileId=12"
    assert (f.name, f.size, f.size_is_exact) == ("model.safetensors", len(MODEL), False)
    assert f.sha256 == hashlib.sha256(MODEL).hexdigest()
    assert f.blake3 == blake3.blake3(MODEL).hexdigest()
    assert (f.source, f.revision, f.etag) == ("civitai:456?fileId=12", "12", None)
    assert (f.credential, f.auth_origin) == ("civitai", origin_of(civ.base_url))
    assert f.headers == (("Content-Type", "application/json"),)
    assert parse_civitai_ref(f.source) == CivitaiRef(version_id=456, file_id=12)
    assert not civ.storage.requests and not civ.requests_to("/api/download")  # resolve only


@pytest.mark.parametrize("ref,file_id", [
    ("456", 11), ("https://civitai.com/api/download/models/456?fileId=11", None),
    ("https://civitai.com/models/123?modelVersionId=456", 11),
])
async def test_file_id_pins_a_file(civ, settings_for, ref, file_id):
    [f] = await CivitaiSource(settings_for(civ), ref, file_id=file_id).resolve()
    assert (f.name, f.revision, f.url.endswith("fileId=11")) == ("vae.safetensors", "11", True)


async def test_unknown_file_id_lists_the_files(civ, settings_for):
    with pytest.raises(NotFoundError) as err:
        await CivitaiSource(settings_for(civ), "456", file_id=99).resolve()
    assert "11 vae.safetensors (VAE" in err.value.hint and "12 model.safetensors" in err.value.hint


def test_conflicting_file_ids(make_settings):
    with pytest.raises(UsageError):
        CivitaiSource(make_settings(), "civitai:456?fileId=1", file_id=2)


async def test_model_url_means_the_newest_version(civ, settings_for):
    civ.add_version(789, 123, [CivitaiFile(21, "v2.safetensors", b"new" * 400)])
    [f] = await CivitaiSource(settings_for(civ), "https://civitai.com/models/123/slug").resolve()
    assert (f.url.endswith("/models/789?fileId=21"), f.name) == (True, "v2.safetensors")


async def test_without_primary_the_model_file_wins(civ, settings_for):
    civ.add_version(5, 6, [CivitaiFile(1, "cfg.yaml", b"x", type="Config"),
                           CivitaiFile(2, "w.safetensors", b"w", type="Model")])
    [f] = await CivitaiSource(settings_for(civ), "5").resolve()
    assert f.name == "w.safetensors"


@pytest.mark.parametrize("name", ["../../evil.safetensors", "/etc/passwd", "a/b.safetensors",
                                  "C:evil.safetensors", "evil\x1b[2J.safetensors"])
async def test_hostile_names_are_refused(civ, settings_for, name):
    civ.add_version(666, 1, [CivitaiFile(1, name, b"x", primary=True)])
    with pytest.raises(UnsafePathError):
        await CivitaiSource(settings_for(civ), "666").resolve()


async def test_junk_hashes_are_dropped(civ, settings_for):
    civ.add_version(7, 1, [CivitaiFile(1, "m.safetensors", b"m", primary=True, sha256="NOTHEX",
                                       blake3="")])
    [f] = await CivitaiSource(settings_for(civ), "7").resolve()
    assert (f.sha256, f.blake3, f.expected_hash) == (None, None, None)


async def test_token_goes_to_the_api_host_only_as_bearer(civ, settings_for):
    await CivitaiSource(settings_for(civ, TOKEN),
                        "https://civitai.com/api/download/models/456?token=LEAKED").resolve()
    assert civ.requests and all(r.header("authorization") == f"Bearer {TOKEN}"
                                and "token" not in r.query for r in civ.requests)
    assert all("LEAKED" not in r.path + str(r.query) for r in civ.requests)
    civ.clear_log()
    await CivitaiSource(settings_for(civ), "456").resolve()
    assert civ.requests[0].header("authorization") is None
    assert civ.requests[0].header("content-type") == "application/json"


async def test_unknown_version_and_model(civ, settings_for):
    with pytest.raises(NotFoundError, match="model version 999 was not found on CivitAI"):
        await CivitaiSource(settings_for(civ), "999").resolve()
    with pytest.raises(NotFoundError, match="model 999 was not found on CivitAI"):
        await CivitaiSource(settings_for(civ), "https://civitai.com/models/999").resolve()


async def test_rejected_token(civ, settings_for):
    with pytest.raises(AuthError, match="did not accept CIVITAI_TOKEN") as err:
        await CivitaiSource(settings_for(civ, "bad_key_value"), "456").resolve()
    assert "bad_key_value" not in str(err.value)


async def test_api_login_required_and_early_access(civ, settings_for):
    civ.fail_next("/api/v1/model-versions/456", 401, body='{"error":"Unauthorized"}')
    with pytest.raises(AuthError, match="requires a CivitAI login") as err:
        await CivitaiSource(settings_for(civ), "456").resolve()
    assert "CIVITAI_TOKEN" in err.value.hint
    civ.fail_next("/api/v1/model-versions/456", 403,
                  body='{"error":"Early Access","deadline":"2099-05-01T00:00:00.000Z"}')
    with pytest.raises(AuthError, match="early access on CivitAI until 2099-05-01"):
        await CivitaiSource(settings_for(civ), "456").resolve()


async def test_hiccups_are_retried_then_reported(civ, settings_for):
    civ.fail_next("/api/v1/", 503)
    assert await CivitaiSource(settings_for(civ), "456").resolve()
    civ.fail_next("/api/v1/", 500, times=-1)
    with pytest.raises(RemoteError, match="HTTP 500"):
        await CivitaiSource(settings_for(civ), "456").resolve()
    assert len(civ.requests) == 1 + 1 + 3


async def test_not_json(civ, settings_for):
    civ.fail_next("/api/v1/", 200, body="<html>captive portal</html>")
    with pytest.raises(RemoteError, match="not a JSON object"):
        await CivitaiSource(settings_for(civ), "456").resolve()


async def test_unreachable(make_settings, closed_port_url):
    with pytest.raises(RemoteError, match="cannot reach CivitAI"):
        await CivitaiSource(make_settings(MODELMGR_CIVITAI_URL=closed_port_url), "456").resolve()


@pytest.mark.parametrize("status,body,location,token_set,error,words", [
    (401, b'{"error":"Unauthorized"}', None, False, AuthError, "requires a CivitAI login"),
    (401, b"", None, True, AuthError, "did not accept CIVITAI_TOKEN"),
    (307, b"", "/login?returnUrl=%2Fmodel-versions%2F1&reason=download-auth", False, AuthError,
     "requires a CivitAI login"),
    (302, b"", "https://civitai.com/login?reason=download-auth", True, AuthError, "did not accept"),
    (403, b'{"error":"Early Access","deadline":"2030-01-01"}', None, False, AuthError,
     "early access on CivitAI until 2030-01-01"),
    (403, b'{"error":"Forbidden\\u001b[31m"}', None, True, AuthError, "HTTP 403: Forbidden"),
    (404, b'{"error":"Model not found"}', None, False, NotFoundError,
     "this file was not found on CivitAI"),
    (307, b"", "https://storage.example/x?X-Amz-Signature=1", False, None, None),
    (200, b"", None, False, None, None),
    (500, b"", None, False, None, None),
])
def test_download_error_table(status, body, location, token_set, error, words):
    got = civitai_download_error(status, body, location, token_set=token_set)
    if error is None:
        assert got is None
    else:
        assert isinstance(got, error) and words in got.message and "\x1b" not in str(got)


@pytest.mark.parametrize("json_header,expected_status", [(True, 401), (False, 307)])
async def test_login_required_download_maps_to_auth_error(civ, json_header, expected_status):
    civ.add_version(8, 1, [CivitaiFile(1, "g.safetensors", b"g", primary=True)],
                    login_required=True)
    headers = {"Content-Type": "application/json"} if json_header else {}
    async with aiohttp.ClientSession() as session, session.get(
            civ.url("/api/download/models/8", fileId=1), headers=headers,
            allow_redirects=False) as resp:
        body = await resp.read()
        assert resp.status == expected_status
        error = civitai_download_error(resp.status, body, resp.headers.get("Location"))
    assert isinstance(error, AuthError) and "CIVITAI_TOKEN" in error.hint
