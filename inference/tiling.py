"""The zonal tile grid: overlapping tiles whose cores partition the area exactly.

All the arithmetic is in whole pixels of the *reference grid* (the finest input modality), so
no floating-point drift can open a seam or shift a core. A tile is `tile_px` wide and starts
`margin_px` before its core; cores follow each other with a stride of `tile_px - 2 * margin_px`
from the area's upper-left pixel, so core `k` covers `[k * stride, min((k + 1) * stride, W))`.
Every core pixel therefore sees at least `margin_px` of context on each side (context outside the
area is zero-filled by the reader), and no pixel is written twice.

The reference (`slicing.py`) walks the same stride in metres from `min - margin` and snaps the
last tile back inside `max + margin`; we snap the same way (the last tile reads no further than
the margin beyond the area) but keep the cores disjoint instead of overwriting the previous core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

from affine import Affine


@dataclass(frozen=True)
class Tile:
    """One tile of the grid, in reference-grid pixels relative to the area's upper-left corner.

    `x0, y0` is the tile's upper-left pixel (negative at the area's west/north edge: the margin
    lies outside the area); `core_*` is the half-open pixel box this tile writes.
    """

    row: int
    col: int
    x0: int
    y0: int
    size: int
    core_x: tuple[int, int]
    core_y: tuple[int, int]

    @property
    def id(self) -> str:
        """Stable name used in logs, error reports and the resume ledger (`r<row>-c<col>`)."""
        return f"r{self.row:04d}-c{self.col:04d}"

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        """Rows and columns of the tile's own prediction that belong to its core."""
        return (slice(self.core_y[0] - self.y0, self.core_y[1] - self.y0),
                slice(self.core_x[0] - self.x0, self.core_x[1] - self.x0))


def _axis_starts(length: int, tile_px: int, margin_px: int) -> list[tuple[int, tuple[int, int]]]:
    """(tile start, core range) along one axis of `length` reference pixels."""
    stride = tile_px - 2 * margin_px
    n = max(1, math.ceil(length / stride))
    out = []
    for k in range(n):
        core = (k * stride, min((k + 1) * stride, length))
        # Snap the last tiles back so they read no more than `margin_px` past the far edge,
        # but never before `-margin_px` (an area smaller than one tile keeps its first tile).
        start = max(min(core[0] - margin_px, length + margin_px - tile_px), -margin_px)
        out.append((start, core))
    return out


@dataclass(frozen=True)
class TileGrid:
    """The tiling of a `width` x `height` pixel area (reference grid) into tiles with margins."""

    width: int
    height: int
    tile_px: int
    margin_px: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"area must be at least one pixel, got {self.width} x {self.height}")
        if self.margin_px < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin_px}")
        if self.tile_px - 2 * self.margin_px <= 0:
            raise ValueError(
                f"img_pixels_detection ({self.tile_px}) must exceed twice the margin ({self.margin_px}): "
                "no core would be left"
            )

    @property
    def stride(self) -> int:
        return self.tile_px - 2 * self.margin_px

    @property
    def shape(self) -> tuple[int, int]:
        """(tile rows, tile columns)."""
        return (len(_axis_starts(self.height, self.tile_px, self.margin_px)),
                len(_axis_starts(self.width, self.tile_px, self.margin_px)))

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major order (north to south, west to east)."""
        xs = _axis_starts(self.width, self.tile_px, self.margin_px)
        ys = _axis_starts(self.height, self.tile_px, self.margin_px)
        for r, (y0, core_y) in enumerate(ys):
            for c, (x0, core_x) in enumerate(xs):
                yield Tile(r, c, x0, y0, self.tile_px, core_x, core_y)


def tile_bounds(tile: Tile, area_transform: Affine) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the whole tile (core + margins) in map units.

    `area_transform` is the reference grid's affine (north-up, pixel (0, 0) = upper-left).
    """
    left, top = area_transform @ (tile.x0, tile.y0)
    right, bottom = area_transform @ (tile.x0 + tile.size, tile.y0 + tile.size)
    return (left, bottom, right, top)


# --------------------------------------------------------------------------------------------
# Output grid (output_px_meters may differ from the reference resolution)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputGrid:
    """Maps reference-grid cores to the output raster's pixels by nearest-neighbour sampling.

    Output pixel `j` takes the prediction of the reference pixel under its centre,
    `floor((j + 0.5) * out_res / ref_res)`. Because that mapping is global (not per tile), the
    output cores partition the output raster exactly as the reference cores partition the area,
    whatever the ratio of resolutions, and the result cannot depend on the tiling.
    """

    ref_res: float
    out_res: float
    ref_width: int
    ref_height: int

    @property
    def ratio(self) -> float:
        """Reference pixels per output pixel."""
        return self.out_res / self.ref_res

    @property
    def width(self) -> int:
        return max(1, round(self.ref_width / self.ratio))

    @property
    def height(self) -> int:
        return max(1, round(self.ref_height / self.ratio))

    def _first_out(self, ref_px: int, n_out: int) -> int:
        # The first output pixel whose centre lies at or after reference pixel `ref_px`.
        return min(n_out, max(0, math.ceil(ref_px / self.ratio - 0.5 - 1e-9)))

    def out_range(self, core: tuple[int, int], axis_len: int, n_out: int) -> tuple[int, int]:
        """Half-open output range written for a reference core range on one axis."""
        lo = self._first_out(core[0], n_out)
        hi = n_out if core[1] >= axis_len else self._first_out(core[1], n_out)
        return lo, hi

    def sample_index(self, out_lo: int, out_hi: int, ref_lo: int, ref_hi: int) -> list[int]:
        """Reference pixel (absolute) sampled by each output pixel of `[out_lo, out_hi)`.

        Clamped into the core `[ref_lo, ref_hi)`: only the last output pixel of an area whose
        size is not a whole number of output pixels can fall beyond it.
        """
        idx = []
        for j in range(out_lo, out_hi):
            i = math.floor((j + 0.5) * self.ratio + 1e-9)
            idx.append(min(max(i, ref_lo), ref_hi - 1))
        return idx

    def transform(self, area_transform: Affine) -> Affine:
        """The output raster's affine: same origin as the area, `out_res` pixels."""
        return Affine(self.out_res, 0.0, area_transform.c, 0.0, -self.out_res, area_transform.f)
