"""The shipped systemd units: what they promise, and ``systemd-analyze verify`` on them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from modelmgr.errors import ExitCode

SYSTEMD = Path(__file__).parents[2] / "systemd"
UNITS = ("modelmgr.service", "modelmgr-sync.service", "modelmgr-sync.timer")
INSTALLED = "/opt/modelmgr/bin/modelmgr"
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/mnt/models",
             "PrivateTmp": "yes", "ProtectHome": "yes", "ProtectKernelTunables": "yes",
             "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
             "ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
             "User": "modelmgr", "CapabilityBoundingSet": ""}


def unit(name: str) -> dict[str, list[str]]:
    """``Key=Value`` lines of a unit file (keys may repeat)."""
    keys: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_the_service_is_a_hardened_notify_service_with_a_watchdog():
    service = unit("modelmgr.service")
    assert service["Type"] == ["notify"] and service["WatchdogSec"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == [str(ExitCode.USAGE)]  # a bad config
    assert service["ExecStart"] == [f"{INSTALLED} daemon --config /etc/modelmgr/modelmgr.yaml"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["EnvironmentFile"] == ["-/etc/modelmgr/modelmgr.env"]
    sync = unit("modelmgr-sync.service")
    assert sync["Type"] == ["oneshot"] and "sync --config" in sync["ExecStart"][0]
    for keys in (service, sync):
        for key, value in HARDENING.items():
            assert keys.get(key) == [value], key
    timer = unit("modelmgr-sync.timer")
    assert timer["OnUnitInactiveSec"] and timer["Persistent"] == ["true"]
    env = (SYSTEMD / "modelmgr.env.example").read_text()
    assert "\nHF_TOKEN=\n" in env and "\nCIVITAI_TOKEN=\n" in env


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run here: {probe.stderr.strip()[:200]}")
    return exe


def test_systemd_analyze_verify_passes(tmp_path):
    exe = _systemd_analyze()
    entry = shutil.which("modelmgr")
    if entry is None:  # not installed as a script: any executable will do for verify
        entry = str(tmp_path / "modelmgr")
        Path(entry).write_text("#!/bin/sh\nexit 0\n")
        Path(entry).chmod(0o755)
    for name in UNITS:  # verify checks that ExecStart= exists: point it at this install
        (tmp_path / name).write_text((SYSTEMD / name).read_text().replace(INSTALLED, entry))
    result = subprocess.run([exe, "verify", "--man=no", *UNITS], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    # verify exits 0 even for unknown keys ("ignoring"), so any output at all is a failure
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
