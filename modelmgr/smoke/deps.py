"""Optional dependencies of the smoke test, imported in one place with one clear error.

The core of modelmgr must import without torch or diffusers (they are the ``gpu`` extra), so
every module of this package imports them inside functions, through :func:`torch`,
:func:`diffusers` and :func:`transformers` (text encoders only) here. A missing package becomes a
:class:`MissingExtraError` (exit code 2) that names the extra to install, never an ImportError
traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError

INSTALL_HINT = "pip install 'modelmgr[gpu]'"


def _require(module: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs the Python package '{module.split('.')[0]}', which is "
                                f"not installed ({err.msg if hasattr(err, 'msg') else err})",
                                INSTALL_HINT) from None


def torch(purpose: str = "this command") -> ModuleType:
    """``import torch``, or MissingExtraError naming the gpu extra."""
    return _require("torch", purpose)


def diffusers(purpose: str = "this command") -> ModuleType:
    """``import diffusers`` (and torch first, for the clearer message), or MissingExtraError."""
    torch(purpose)
    return _require("diffusers", purpose)


def transformers(purpose: str = "this command") -> ModuleType:
    """``import transformers`` (the text encoders' model classes and tokenizers), or MissingExtraError."""
    torch(purpose)
    return _require("transformers", purpose)


def optional(module: str) -> ModuleType | None:
    """An optional accelerator package (comfy_kitchen): the module, or None when unavailable."""
    try:
        return importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken optional install must not break the smoke test
        return None
