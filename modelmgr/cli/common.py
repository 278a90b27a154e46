"""What every command shares: settings from the environment plus flags, output mode, the event
loop shim, and turning results into exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from rich.console import Console
from rich.markup import escape

from ..download.engine import FileResult
from ..errors import ExitCode, ModelMgrError
from ..service import ModelManager
from ..settings import Settings
from .render import print_results, run_with_progress

T = TypeVar("T")


@dataclass
class CliState:
    """Process-wide flags set by the root callback and by commands (for error rendering)."""

    debug: bool = False
    json: bool = False


STATE = CliState()


def stderr_console() -> Console:
    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False,
                   soft_wrap=True, emoji=False)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with command-line overrides (None = not given)."""
    return Settings.from_env(os.environ, **overrides)


def manager_for(root: Path | None = None, **overrides: Any) -> ModelManager:
    """A façade for the effective settings, optionally with another models root."""
    return ModelManager(load_settings(models_root=str(root) if root else None, **overrides))


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def stdout_console() -> Console:
    """Lines are not wrapped (paths and hashes stay greppable); tables still fit the width."""
    return Console(no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True,
                   emoji=False)  # ":x:" in a file's bytes must not turn into an emoji


def progress_mode(as_json: bool) -> str:
    if as_json:
        return "quiet"
    return "rich" if sys.stderr.isatty() else "plain"


def run(coro: Awaitable[T]) -> T:
    """The sync shim around one async call."""
    return asyncio.run(coro)  # type: ignore[arg-type]


def pull_and_report(settings: Settings, resolve: Callable[[ModelManager], Awaitable[list]],
                    dest: Path, as_json: bool, *, hash_always: bool = True) -> int:
    """Resolve, pull with progress, print the results; returns the exit code."""
    STATE.json = as_json
    manager = ModelManager(settings)
    console = stderr_console()

    async def work() -> list[FileResult]:
        remotes = await resolve(manager)
        return await run_with_progress(manager.progress, manager.pull(remotes, dest,
                                                                      hash_always=hash_always),
                                       progress_mode(as_json), console)

    results = run(work())
    print_results(results, as_json, stdout_console())
    failed = [r.error for r in results if r.error is not None]
    return failed[0].exit_code if failed else ExitCode.OK


def report_error(err: ModelMgrError) -> None:
    """Print an expected error the way the current output mode wants it."""
    if STATE.json:
        print(json.dumps({"ok": False, "error": err.to_dict()}, indent=2))
    else:
        stderr_console().print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
