"""The ``modelmgr`` command: the Typer app, the root options, and the one place where errors
become messages and exit codes (tracebacks only with ``--debug``)."""

from __future__ import annotations

import json
import os
import sys
import traceback

import click
import typer
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..errors import EXIT_TABLE, ExitCode, ModelMgrError
from . import bundles, daemon, library, pull, smoke, tui
from .common import STATE, load_settings, report_error

app = typer.Typer(
    name="modelmgr", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="Pull quantized diffusion-model bundles fast, verified, into ComfyUI's layout.",
    epilog="Exit codes: " + "; ".join(f"{r.code} {r.meaning}" for r in EXIT_TABLE))
app.add_typer(pull.app, name="pull")
app.add_typer(bundles.app, name="bundles")
app.add_typer(library.comfyui, name="comfyui")
for _command in (library.ls, library.inspect, library.verify, library.scan, library.rm):
    app.command(_command.__name__)(_command)
for _command in (smoke.smoke, smoke.bench, smoke.quantize):
    app.command(_command.__name__)(_command)
app.command("tui")(tui.tui)
for _command in (daemon.daemon, daemon.sync, daemon.status):
    app.command(_command.__name__)(_command)


def _version(value: bool) -> None:
    if value:
        print(f"modelmgr {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
         debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    """modelmgr: model asset manager and downloader."""
    STATE.debug = debug


@app.command("env")
def env(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show the effective settings and where they come from (tokens masked)."""
    STATE.json = as_json
    rows = load_settings().describe()
    if as_json:
        print(json.dumps({var: value for var, value, _ in rows}, indent=2))
        return
    table = Table("variable", "value", "meaning", title=f"modelmgr {__version__}")
    for var, value, help_text in rows:
        table.add_row(var, value, help_text)
    Console(no_color=bool(os.environ.get("NO_COLOR"))).print(table)


def _click_family(name: str, *roots: type) -> tuple[type, ...]:
    """The click exception class ``name`` as click and typer's bundled copy of click define it."""
    found = {getattr(click.exceptions, name)}
    for root in roots:
        found.update(c for c in root.__mro__ if c.__name__ == name)
    return tuple(found)


_CLICK_ERRORS = _click_family("ClickException", typer.BadParameter)
_ABORTS = _click_family("Abort", typer.Abort)


def _interrupted() -> None:
    print("interrupted; partial downloads are kept, run the same command to resume",
          file=sys.stderr)
    sys.exit(ExitCode.INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="modelmgr", standalone_mode=False)
        if code == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into this exit code
            _interrupted()
        sys.exit(code if isinstance(code, int) else 0)
    except _CLICK_ERRORS as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except (KeyboardInterrupt, *_ABORTS):
        _interrupted()
    except ModelMgrError as err:
        if STATE.debug:
            traceback.print_exc()
        report_error(err)
        sys.exit(err.exit_code)
    except OSError as exc:  # a path the user gave cannot be read or written
        if STATE.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        report_error(ModelMgrError(f"{where}{exc.strerror or exc}",
                                   "check the path and its permissions"))
        sys.exit(ExitCode.INTERNAL)
    except Exception:  # noqa: BLE001 - the last line of defence: say it is a bug
        if STATE.debug:
            raise
        err = ModelMgrError(f"internal error: {sys.exc_info()[1]!r}",
                            "run again with --debug and report the traceback")
        report_error(err)
        sys.exit(ExitCode.INTERNAL)
