"""Swin weights for another window layout: relative-position bias tables resized to the model's windows.

A Swin encoder built for a smaller or larger input clips its attention windows to each stage's
feature map (timm: a window never exceeds the map), so the same checkpoint needs tables of
another size, e.g. SPOT trained at 64 px has (15 x 15, 8) tables in stage 2 while a 256 px zonal
tile wants (23 x 23, 8). The reference's zonal loader (`flair_hub/models/checkpoint.py::
interpolate_bias_table`) resizes them bicubically over the 2-D grid of offsets
(`align_corners=False`); timm's `resize_rel_pos_bias_table_simple` is that same interpolation,
and is what we call. Nothing else in the state dict depends on the layout: timm's
`relative_position_index` and attention masks are non-persistent buffers that the model rebuilds
for its own windows.

Only tables whose shape differs are touched; every other key must match exactly (the caller
checks them strictly), and a checkpoint loaded at its training layout is loaded bit for bit.
"""

from __future__ import annotations

import math
from typing import Mapping

from timm.layers import resize_rel_pos_bias_table_simple
from torch import Tensor

BIAS_TABLE = "relative_position_bias_table"


def window_of_table(rows: int) -> int | None:
    """The square window whose bias table has `rows` rows (`(2w - 1)^2`), or None if there is none."""
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        return None
    return (side + 1) // 2


def resize_bias_table(table: Tensor, rows: int) -> Tensor:
    """A `(N_old, heads)` table resized to `(rows, heads)` (bicubic over the offset grid, as the reference)."""
    window = window_of_table(rows)
    if window is None or window_of_table(table.shape[0]) is None:
        raise ValueError(f"relative position bias tables of {table.shape[0]} and {rows} rows are not square windows")
    if table.shape[0] == rows:
        return table
    out = resize_rel_pos_bias_table_simple(table.float(), (window, window), (rows, table.shape[1]))
    return out.to(table.dtype).contiguous()


def fit_window_layout(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """`state` with each bias table resized to the shape `target` (the model's state dict) has.

    Returns the new state and the keys that were resized. Tables whose head count differs, and
    every other mismatch, are left as they are for the strict check to report.
    """
    out = dict(state)
    resized = []
    for key, value in state.items():
        want = target.get(key)
        if (
            want is None or not key.endswith(BIAS_TABLE) or value.dim() != 2
            or tuple(value.shape) == tuple(want.shape) or value.shape[1] != want.shape[1]
            or window_of_table(value.shape[0]) is None or window_of_table(want.shape[0]) is None
        ):
            continue
        out[key] = resize_bias_table(value, want.shape[0])
        resized.append(key)
    return out, resized
