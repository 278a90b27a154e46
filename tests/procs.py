"""Running the real ``modelmgr`` command in a subprocess, as users do."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

FAST_ENV = {"MODELMGR_MIN_PART_SIZE": "64K", "MODELMGR_RETRY_BASE": "0.01",
            "MODELMGR_RETRY_CAP": "0.05", "MODELMGR_STALL_TIMEOUT": "2",
            "MODELMGR_STATE_INTERVAL": "0.05", "NO_COLOR": "1"}


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a child modelmgr: no real tokens or endpoints leak in from the host."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELMGR_", "HF_", "CIVITAI_", "HUGGING"))}
    env.update(FAST_ENV)
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HOME"] = os.path.join(tempfile.gettempdir(), "modelmgr-tests-hf-home")
    env.update(extra)
    return env


async def start_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelmgr", *args, env=env or cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 60) -> tuple[int, str, str]:
    """Run modelmgr to completion; returns (exit code, stdout, stderr)."""
    proc = await start_cli(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()
