"""``modelmgr daemon|sync|status``: keep a (shared) volume in sync with a list of wanted bundles.

The work is in ``modelmgr/daemon/``; these commands find the config (``--config`` or
``MODELMGR_CONFIG``), run it and render the result. Both ``daemon`` and ``sync`` write structured
``key=value`` lines to stdout (journald); ``sync --json`` moves them to stderr and prints the cycle.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from ..errors import ExitCode, UsageError
from .common import STATE, load_settings, print_json, stdout_console
from .options import JSON, ROOT

CONFIG = typer.Option(None, "--config", "-c",
                      help="Daemon config (YAML); default MODELMGR_CONFIG. "
                           "See systemd/README.md.")


def _config_path(config: Optional[Path]) -> Path:
    if config is not None:
        return config
    from_env = load_settings().daemon_config
    if not from_env:
        raise UsageError("no config file given",
                         "pass --config FILE or set MODELMGR_CONFIG (see systemd/README.md)")
    return Path(from_env)


def daemon(config: Optional[Path] = CONFIG) -> None:
    """Run the reconcile loop: pull, verify and (optionally) prune the wanted bundles forever.

    Made for systemd (Type=notify: READY, STATUS, WATCHDOG, STOPPING); SIGHUP reloads the config,
    SIGTERM stops within seconds with partial downloads kept for resume. Exits 2 on a bad config.
    """
    from ..daemon.loop import run_daemon

    code = run_daemon(_config_path(config), os.environ)
    sys.stdout.flush()
    raise typer.Exit(code)


def sync(config: Optional[Path] = CONFIG, as_json: bool = JSON,
         retry_failed: bool = typer.Option(
             False, "--retry-failed",
             help="Also retry bundles held back because their files failed their checks.")
         ) -> None:
    """Run one reconcile cycle (for a timer or cron); exits non-zero when something failed."""
    from ..daemon.config import load_config
    from ..daemon.events import EventLog
    from ..daemon.loop import run_once

    STATE.json = as_json
    cfg = load_config(_config_path(config))
    cfg.settings(os.environ)  # a bad environment is a usage error before any work
    log = EventLog(sys.stderr if as_json else sys.stdout)
    report = run_once(cfg, os.environ, log, retry_failed=retry_failed)
    if report is None:
        print("interrupted; partial downloads are kept, the next sync resumes them",
              file=sys.stderr)
        raise typer.Exit(ExitCode.INTERRUPTED)
    if as_json:
        print_json(report.to_dict())
    raise typer.Exit(report.exit_code)


def status(config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT,
           as_json: bool = JSON) -> None:
    """Show the last cycles of every daemon on the volume, what is missing and what failed."""
    from ..daemon.config import load_config
    from ..daemon.status import volume_status

    STATE.json = as_json
    path = config or (Path(p) if (p := load_settings().daemon_config) else None)
    cfg = load_config(path) if path is not None else None
    if cfg is None and root is None:
        raise UsageError("status needs the config (or at least the models root)",
                         "pass --config FILE, set MODELMGR_CONFIG, or pass --root")
    doc = volume_status(root or cfg.root, os.environ, cfg)  # type: ignore[union-attr]
    if as_json:
        print_json(doc)
        return
    out = stdout_console()
    out.print(f"root {doc['root']}" + ("" if doc["root_exists"] else " (does not exist)")
              + (f" (config {cfg.path})" if cfg else ""), markup=False)
    if doc["wanted"] is not None:
        out.print("wanted: " + (", ".join(doc["wanted"]) or "nothing"), markup=False)
        out.print("missing: " + ("nothing" if not doc["missing"] else ""), markup=False)
        for m in doc["missing"]:
            out.print(f"  {m['bundle']}: {m['path'] or m.get('detail')} ({m['state']})",
                      markup=False)
    out.print("failures: " + ("none" if not doc["failures"] else ""), markup=False)
    for f in doc["failures"]:
        err = f.get("error") or {}
        what = f["bundle"] or "cycle"
        message = err.get("message", f.get("state"))
        out.print(f"  {f['daemon']} cycle {f['cycle']}: {what}: {message}", markup=False)
        if err.get("hint"):
            out.print(f"    hint: {err['hint']}", markup=False)
    out.print("last cycles:" + ("" if doc["cycles"] else " none yet"), markup=False)
    for c in doc["cycles"]:
        when = datetime.fromtimestamp(c["finished"] or c["started"]).isoformat(timespec="seconds")
        seconds = (c["finished"] - c["started"]) if c.get("finished") else 0.0
        state = "ok" if c.get("ok") else ("interrupted" if c.get("interrupted") else "FAILED")
        out.print(f"  {when} {c['name']} #{c['cycle']} ({c['trigger']}): {state}, "
                  f"fetched {c.get('fetched', 0)} bytes in {seconds:.1f}s", markup=False)
