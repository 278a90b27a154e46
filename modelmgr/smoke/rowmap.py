"""Apply a diffusers single-file key converter to weights it cannot handle directly.

diffusers' converters (``convert_flux_transformer_checkpoint_to_diffusers`` and friends) rename
keys and cut fused tensors along their first dimension (QKV → Q, K, V; scale/shift swaps). They
call ``torch.chunk`` / ``torch.split`` / ``torch.cat`` on the values, which a packed FP4 tensor
with swizzled scales or a GGUF block tensor does not survive.

So the converter is run once on *row labels*: each source tensor is replaced by a ``[rows, 1]``
float64 tensor whose values encode ``(source key, row)``. Whatever the converter does along dim 0,
each output tensor then says exactly which rows of which source it is made of, and those rows
are taken from the real weights — plain tensors and every quantized format alike (see
``QuantWeight.rows``), as views whenever the rows are contiguous. The converter stays the single
source of truth for the mapping.

``layouts`` lets a family pad a source's labels to the sizes a converter hard-codes (diffusers'
FLUX.1 converter splits ``linear1`` assuming width 3072); the padding rows are labelled -1 and
dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BadFileError
from . import deps

_ROW_BITS = 26
_ROW_MASK = (1 << _ROW_BITS) - 1


def _rows_of(value) -> int:
    shape = getattr(value, "shape", ())
    return int(shape[0]) if len(shape) else 1


def apply_converter(converter: Callable[[dict], dict], state: Mapping[str, Any], name: str,
                    layouts: Mapping[str, list[int]] | None = None) -> dict[str, Any]:
    """``converter`` applied to ``state`` (plain tensors and QuantWeights) through row labels.

    ``layouts[key]`` optionally gives the label layout of one source: a list of row indices
    (-1 for padding) that the converter sees instead of ``range(rows)``.
    """
    torch = deps.torch()
    keys = list(state)
    labels: dict[str, Any] = {}
    for i, key in enumerate(keys):
        rows = layouts.get(key) if layouts and key in layouts else list(range(_rows_of(state[key])))
        ids = torch.tensor(rows, dtype=torch.float64)
        labels[key] = torch.where(ids < 0, ids, ids + float(i << _ROW_BITS)).reshape(-1, 1)
    try:
        converted = converter(labels)
    except KeyError as err:
        raise BadFileError(f"{name}: tensor {err.args[0]!r} is missing; not a complete checkpoint of this "
                           "family", "check that the file is not truncated or mislabelled") from None
    except (RuntimeError, ValueError, IndexError) as err:
        raise BadFileError(f"{name}: the tensors do not have this family's shapes ({str(err)[:120]})") from None
    return {key: _take(state, keys, labels_out, key, name) for key, labels_out in converted.items()}


def _take(state: Mapping[str, Any], keys: list[str], labels, out_key: str, name: str):
    from .quant.base import QuantWeight

    torch = deps.torch()
    flat = labels.reshape(-1)
    flat = flat[flat >= 0].to(torch.int64)
    sources = torch.unique(flat >> _ROW_BITS)
    if sources.numel() != 1:
        raise BadFileError(f"{name}: the converter built {out_key!r} from several tensors; "
                           "modelmgr cannot do that without dequantizing")
    key = keys[int(sources[0])]
    value = state[key]
    rows = flat & _ROW_MASK
    total = _rows_of(value)
    if rows.numel() == total and bool((rows == torch.arange(total)).all()):
        return value
    start = int(rows[0])
    if bool((rows == torch.arange(start, start + rows.numel())).all()):
        index: Any = slice(start, start + rows.numel())
    else:
        index = rows
    if isinstance(value, QuantWeight):
        return value.rows(index)
    return value[index] if isinstance(index, slice) else value.index_select(0, index.to(value.device))
