"""The smoke runtime's Triton kernels: built once, used when they work, eager torch otherwise.

Each kernel (the FP8 activation quantizer, the fused RMSNorm) is optional: without Triton, on a
CPU, or when a launch fails, its caller runs the same arithmetic as eager torch ops. A failure is
final for the process (no retry per call) and is reported: :func:`status` says which path each
kernel took, and smoke results carry it, so a slow run can be explained.
"""

from __future__ import annotations

from typing import Callable

from . import deps

_BUILT: dict[str, object] = {}
_PATH: dict[str, str] = {}
_ERROR: dict[str, str] = {}


def kernel(name: str, build: Callable) -> object | None:
    """The kernel ``name`` from ``build(triton, tl)``, built on first use; None when Triton is
    missing or the kernel failed before."""
    if name in _ERROR:
        return None
    if name not in _BUILT:
        triton = deps.optional("triton")
        if triton is None:
            _BUILT[name] = None
            _PATH[name] = "eager (no Triton)"
        else:
            import triton.language as tl

            _BUILT[name] = build(triton, tl)
    return _BUILT[name]


def launch(name: str, run: Callable[[], None]) -> bool:
    """Run a launch of ``name``; False (and eager from now on) when it raises."""
    try:
        run()
    except Exception as err:  # noqa: BLE001 - fall back to eager for good, and say why
        _PATH[name] = "eager (Triton failed)"
        _ERROR[name] = f"{type(err).__name__}: {str(err)[:200]}"
        return False
    _PATH[name] = "triton"
    return True


def used_eager(name: str) -> None:
    """Record that ``name`` ran as eager torch (CPU tensors, or no kernel)."""
    _PATH.setdefault(name, "eager")


def status() -> dict[str, dict[str, str]]:
    """``{kernel: {"path": ..., "error": ...}}`` for every kernel used in this process."""
    return {name: {"path": path, **({"error": _ERROR[name]} if name in _ERROR else {})}
            for name, path in _PATH.items()}
