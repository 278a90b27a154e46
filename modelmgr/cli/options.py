"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

ROOT = typer.Option(None, "--root", help="Models root (ComfyUI models folder); default MODELMGR_ROOT.")
JSON = typer.Option(False, "--json", help="Print only the result, as JSON.")
