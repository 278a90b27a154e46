"""Fixtures for every test: no ambient credentials from the machine running the tests."""

from __future__ import annotations

import huggingface_hub
import pytest


@pytest.fixture(autouse=True)
def no_ambient_tokens(monkeypatch, tmp_path_factory):
    """Tests decide about tokens: ignore the machine's HF_TOKEN / stored `hf auth login`."""
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "CIVITAI_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
