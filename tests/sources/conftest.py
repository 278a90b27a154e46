"""Fixtures for source tests: fresh loopback servers and settings pointing at them."""

from __future__ import annotations

import socket

import pytest

from modelmgr.settings import Settings

FAST_RETRIES = {"MODELMGR_RETRY_BASE": "0.01", "MODELMGR_RETRY_CAP": "5",
                "MODELMGR_MAX_RETRIES": "3", "MODELMGR_CONNECT_TIMEOUT": "5"}


@pytest.fixture
def make_settings():
    """``make_settings(HF_ENDPOINT=..., HF_TOKEN=...)``: settings with fast retries."""

    def make(**env: str) -> Settings:
        return Settings.from_env({**FAST_RETRIES, **{k: v for k, v in env.items() if v}})

    return make


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
