"""The daemon config (validated at the edge, every error names file, line and field), the
sd_notify client and the log lines."""

from __future__ import annotations

import io
import os
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest

from modelmgr.daemon.config import load_config
from modelmgr.daemon.events import EventLog
from modelmgr.daemon.notify import Notifier
from modelmgr.errors import ConfigError, ExitCode

EXAMPLE = Path(__file__).parents[2] / "systemd" / "modelmgr.yaml.example"


def write(tmp_path: Path, text: str, name: str = "modelmgr.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_full_config_and_the_settings_it_makes(tmp_path):
    tokens = write(tmp_path, """\
        # comment
        export HF_TOKEN="hf_secret"
        CIVITAI_TOKEN=civ_secret
        OTHER=ignored
        """, "modelmgr.env")
    path = write(tmp_path, f"""\
        root: {tmp_path}/models
        bundles: [nvfp4-zimage, fp8-zimage]
        name: node-7
        interval: 90s
        tokens_file: {tokens}
        downloads: {{connections: 4, max_connections: 8, parallel_files: 2, limit_rate: 50M}}
        verify: {{quick: false, deep_every: off}}
        prune: {{enabled: true}}
        locks: {{lease: 2s, wait: 5m, max_clock_skew: 10s}}
        log: {{progress_every: 1.5s}}
        metrics: {{listen: "localhost:0"}}
        """)
    cfg = load_config(path)
    assert cfg.bundles == ("nvfp4-zimage", "fp8-zimage") and cfg.name == "node-7"
    assert (cfg.interval, cfg.lease, cfg.lock_wait, cfg.max_clock_skew) == (90, 2, 300, 10)
    assert cfg.deep_every == 0 and not cfg.verify_quick and cfg.prune
    assert cfg.metrics_listen == ("127.0.0.1", 0) and cfg.progress_every == 1.5
    assert "secret" not in repr(cfg) and "secret" not in str(cfg.to_dict())
    settings = cfg.settings({"MODELMGR_CONNECTIONS": "32", "MODELMGR_STALL_TIMEOUT": "3"})
    assert settings.root == tmp_path / "models" and settings.connections == 4
    assert settings.limit_rate == 50 * 1024 * 1024 and settings.stall_timeout == 3
    assert settings.hf_token == "hf_secret" and settings.civitai_token == "civ_secret"
    assert settings.lock_wait == 300


def test_the_shipped_example_is_valid_and_the_defaults_are_safe(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.root == Path("/mnt/models") and not cfg.prune and cfg.metrics_listen is None
    minimal = load_config(write(tmp_path, "root: /v\nbundles: []\n"))
    assert minimal.bundles == () and not minimal.prune and minimal.interval == 900
    assert minimal.deep_every == 7 * 86400 and minimal.metrics_listen is None


@pytest.mark.parametrize("text, line, expected", [
    ("root: models\nbundles: []\n", 1, "root: models must be an absolute path"),
    ("root: /v\nbundles: []\ninterval: soon\n", 3, "interval: 'soon' is not a duration"),
    ("root: /v\nbundles: nvfp4-zimage\n", 2, "bundles: must be a list of bundle names"),
    ("root: /v\nbundles: [Bad Name]\n", 2, "bundles[0]: 'Bad Name' is not valid"),
    ("root: /v\nbundles: [a, a]\n", 2, "bundles[1]: a appears twice"),
    ("root: /v\nbundles: []\nprune:\n  enable: true\n", 4, "prune.enable: unknown field"),
    ("root: /v\nbundles: []\nprune: {enabled: yes please}\n", 3,
     "prune.enabled: must be true or false"),
    ("root: /v\nbundles: []\ndownloads:\n  connections: 0\n", 4,
     "downloads.connections: must be a number >= 1"),
    ("root: /v\nbundles: []\ndownloads: {limit_rate: fast}\n", 3,
     "downloads.limit_rate: 'fast' is not a size"),
    ("root: /v\nbundles: []\nlocks: {lease: 0.1s}\n", 3, "locks.lease: must be at least 0.5"),
    ("root: /v\nbundles: []\nmetrics: {listen: '0.0.0.0:9464'}\n", 3,
     "metrics.listen: 0.0.0.0 is not a loopback address"),
    ("root: /v\nbundles: []\nmetrics: {listen: 'localhost'}\n", 3,
     "metrics.listen: 'localhost' is not HOST:PORT"),
    ("bundles: []\n", 1, ": missing required field 'root'"),
    ("root: /v\nbundles: []\nintervall: 1h\n", 3, "intervall: unknown field"),
])
def test_a_bad_config_names_file_line_and_field(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.exit_code == ExitCode.USAGE == 2
    assert err.value.message.startswith(f"{path}:{line}:"), err.value.message
    assert expected in err.value.message, err.value.message
    assert "systemd/README.md" in err.value.hint


def test_unreadable_broken_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"modelmgr.yaml:2: not valid YAML"):
        load_config(write(tmp_path, "root: /v\nbundles: a: b\n"))
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write(tmp_path, "\n"))
    path = write(tmp_path, f"root: /v\nbundles: []\ntokens_file: {tmp_path}/missing.env\n")
    with pytest.raises(ConfigError, match=r":3: tokens_file: cannot read"):
        load_config(path)
    env = write(tmp_path, "HF_TOKEN=hf_x\nthis is not an assignment\n", "bad.env")
    path = write(tmp_path, f"root: /v\nbundles: []\ntokens_file: {env}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.message == f"{env}:2: not a KEY=VALUE line"  # never echoes the line


def test_notify_sends_datagrams_to_abstract_and_path_sockets():
    name = "modelmgr-test-notify-abstract"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert notifier.enabled and notifier.watchdog_interval == 1.0
        assert notifier.ready("up\nand running")
        assert server.recv(4096) == b"READY=1\nSTATUS=up and running"
        notifier.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        notifier.close()
    with tempfile.TemporaryDirectory(dir="/tmp") as folder, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        path = f"{folder}/notify"
        server.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.stopping() and server.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        assert notifier.watchdog_interval is None
        notifier.close()


def test_notify_is_silent_outside_systemd_and_for_another_watchdog_pid():
    quiet = Notifier({})
    assert not quiet.enabled and not quiet.ready("x")
    other = Notifier({"NOTIFY_SOCKET": "@nobody-listens", "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert other.send(STATUS="x") is False  # nobody bound: reported, not raised


def test_log_lines_are_one_logfmt_line_each_with_a_journal_priority(tmp_path, monkeypatch):
    out = io.StringIO()
    EventLog(out, journal=False)("bundle.failed", level="error", bundle="x", ok=False,
                                 seconds=1.5, error='bad "thing"\nhere', skipped=None)
    line = out.getvalue()
    assert line.startswith("ts=") and line.count("\n") == 1
    assert ' level=error event=bundle.failed bundle=x ok=false seconds=1.5 ' in line
    assert line.endswith('error="bad \\"thing\\"\\nhere"\n') and "skipped" not in line
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        EventLog(stream)("cycle.done", level="warning", ok=True)
        EventLog(io.StringIO())("not the journal")  # another stream: plain lines
    assert (tmp_path / "journal").read_text() == "<4>level=warning event=cycle.done ok=true\n"
