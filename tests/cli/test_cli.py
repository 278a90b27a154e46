"""The command line as users meet it: help, version, env, exit codes, one-line errors, JSON."""

from __future__ import annotations

import asyncio
import json

from modelmgr.errors import ExitCode
from tests.download.helpers import MiB, payload, sha256
from tests.procs import cli_env, run_cli, start_cli
from tests.servers.ranges import RangeServer

DATA = payload(1 * MiB + 7)


async def test_version_help_and_env_masks_tokens():
    code, out, _ = await run_cli("--version")
    assert code == 0 and out.startswith("modelmgr ")
    code, out, _ = await run_cli("--help")
    assert code == 0 and "pull" in out and "Exit codes" in out
    env = cli_env(HF_TOKEN="hf_abcdefghijklmnopqrstuvwxyz", CIVITAI_TOKEN="civ-secret-value")
    code, out, _ = await run_cli("env", "--json", env=env)
    assert code == 0
    doc = json.loads(out)
    assert doc["HF_TOKEN"] == "set (hidden)" and doc["CIVITAI_TOKEN"] == "set (hidden)"
    code, out, _ = await run_cli("env", env=env)
    assert "abcdefghij" not in out and "secret-value" not in out


async def test_bad_input_gets_one_line_error_and_usage_code(tmp_path):
    code, _, err = await run_cli("pull", "url", "ftp://x/y", "--dest", str(tmp_path))
    assert code == ExitCode.USAGE and "Traceback" not in err and "not an http(s) URL" in err
    code, _, err = await run_cli("pull", "url", "http://127.0.0.1:9/x", "--sha256", "xyz")
    assert code == ExitCode.USAGE and "64 hex" in err and "Traceback" not in err
    code, _, err = await run_cli("pull", "url", "http://127.0.0.1:9/x", "--connections", "0")
    assert code == ExitCode.USAGE
    bad_env = cli_env(MODELMGR_CONNECTIONS="many")
    code, _, err = await run_cli("pull", "url", "http://127.0.0.1:9/x", env=bad_env)
    assert code == ExitCode.USAGE and "MODELMGR_CONNECTIONS" in err


async def test_pull_url_json_result_and_exit_codes(tmp_path):
    async with RangeServer() as srv:
        srv.add_file("/w.safetensors", DATA,
                     content_disposition='attachment; filename="real-name.safetensors"')
        code, out, err = await run_cli("pull", "url", srv.url("/w.safetensors"), "--sha256",
                                       sha256(DATA), "--dest", str(tmp_path), "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["ok"] is True and err == ""
        entry = doc["files"][0]
        assert entry["name"] == "real-name.safetensors" and entry["size"] == len(DATA)
        assert (tmp_path / "real-name.safetensors").read_bytes() == DATA

        code, out, _ = await run_cli("pull", "url", srv.url("/missing.bin"), "--dest",
                                     str(tmp_path), "--json")
        assert code == ExitCode.NOT_FOUND
        assert json.loads(out)["error"]["error"] == "NotFoundError"

        code, out, err = await run_cli("pull", "url", srv.url("/w.safetensors"), "--sha256",
                                       "ab" * 32, "--name", "other.safetensors", "--dest",
                                       str(tmp_path))
        assert code == ExitCode.INTEGRITY
        assert "ab" * 32 in out + err and sha256(DATA) in out + err
        assert not (tmp_path / "other.safetensors").exists()


async def test_hostile_content_disposition_is_refused(tmp_path):
    async with RangeServer() as srv:
        srv.add_file("/x", DATA, content_disposition='attachment; filename="../../evil.sh"')
        code, _, err = await run_cli("pull", "url", srv.url("/x"), "--dest", str(tmp_path))
        assert code == ExitCode.BAD_FILE and "evil.sh" in err and "Traceback" not in err
        assert list(tmp_path.iterdir()) == []


async def test_lock_holder_is_named_when_not_waiting(tmp_path):
    async with RangeServer(per_connection_rate=256 * 1024) as srv:
        srv.add_file("/slow.bin", DATA)
        args = ("pull", "url", srv.url("/slow.bin"), "--dest", str(tmp_path), "--connections", "1")
        holder = await start_cli(*args)
        for _ in range(200):
            await asyncio.sleep(0.02)
            if (tmp_path / "slow.bin.lock").exists():
                break
        code, out, err = await run_cli(*args, env=cli_env(MODELMGR_LOCK_WAIT="0"))
        assert code == ExitCode.LOCKED and f"pid {holder.pid}" in out + err
        holder.kill()
        await holder.wait()


async def test_plain_progress_lines_when_not_a_tty(tmp_path):
    async with RangeServer(per_connection_rate=400 * 1024) as srv:
        srv.add_file("/p.bin", DATA)
        code, out, err = await run_cli("pull", "url", srv.url("/p.bin"), "--dest", str(tmp_path),
                                       "--connections", "1")
        assert code == 0
        assert "✓" in out and "sha256" in out
        assert "\x1b[" not in out + err  # no terminal control codes when piped


async def test_bad_paths_get_clear_errors_and_create_nothing(tmp_path):
    missing = tmp_path / "no-such-folder"
    code, _, err = await run_cli("scan", str(missing))
    assert code == ExitCode.USAGE and "is not a folder" in err and not missing.exists()
    code, _, err = await run_cli("comfyui", "extra-paths", "--root", str(tmp_path), "-o",
                                 str(missing / "x.yaml"))
    assert code == 1 and "No such file or directory" in err and "internal error" not in err
    notes = tmp_path / "notes.txt"
    notes.write_text("root:x:0:0")
    code, _, err = await run_cli("inspect", str(notes), "--root", str(tmp_path))
    assert code == ExitCode.BAD_FILE and "root:x:0" in err  # shown as bytes, never as an emoji
