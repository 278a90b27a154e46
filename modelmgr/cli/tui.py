"""``modelmgr tui``: the terminal UI, an optional extra. Textual is imported only here, inside the
command, so the core and every other command run without it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import MissingExtraError
from .common import manager_for
from .options import ROOT

EXTRA_HINT = "pip install 'modelmgr[tui]'"


def tui(root: Optional[Path] = ROOT) -> None:
    """Open the terminal UI: the catalogue, the library and the transfers (needs the tui extra)."""
    try:
        from modelmgr_tui.app import ModelMgrApp
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "textual":
            raise
        raise MissingExtraError("the terminal UI needs Textual, which is not installed",
                                EXTRA_HINT) from None
    manager = manager_for(root)
    try:
        ModelMgrApp(manager).run()
    finally:
        manager.close()
