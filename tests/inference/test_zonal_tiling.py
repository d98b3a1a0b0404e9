"""Tile grid maths: cores partition the area, every core pixel has its margin of context."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from inference.tiling import OutputGrid, TileGrid, tile_bounds


@pytest.mark.parametrize(
    "width,height,tile,margin",
    [(300, 220, 64, 16), (32, 32, 64, 16), (10, 700, 64, 0), (96, 96, 64, 16), (97, 95, 64, 16),
     (2048 * 3 + 5, 1000, 2048, 512), (5, 3, 8, 1)],
)
def test_cores_partition_the_area_with_full_margins(width: int, height: int, tile: int, margin: int) -> None:
    grid = TileGrid(width, height, tile, margin)
    cover = np.zeros((height, width), dtype=np.int32)
    ids = set()
    for t in grid:
        (ys, xs) = t.core_in_tile
        assert t.core_x[0] < t.core_x[1] and t.core_y[0] < t.core_y[1]
        # The core lies inside the tile, at least `margin` away from its edges.
        assert ys.start >= margin and xs.start >= margin
        assert ys.stop <= tile - margin and xs.stop <= tile - margin
        # Tiles read no more than the margin beyond the area (unless the area is tinier than a tile).
        assert t.x0 >= -margin and t.y0 >= -margin
        if width + 2 * margin >= tile:
            assert t.x0 + tile <= width + margin
        if height + 2 * margin >= tile:
            assert t.y0 + tile <= height + margin
        cover[t.core_y[0]:t.core_y[1], t.core_x[0]:t.core_x[1]] += 1
        ids.add(t.id)
    assert (cover == 1).all(), "every pixel is written by exactly one tile core"
    assert len(ids) == len(grid) == grid.shape[0] * grid.shape[1]


def test_stride_and_reference_defaults() -> None:
    grid = TileGrid(4096, 4096, 2048, 512)
    tiles = list(grid)
    assert grid.stride == 1024
    assert [t.x0 for t in tiles[: grid.shape[1]]] == [-512, 512, 1536, 2560]
    assert tiles[-1].core_x == (3072, 4096) and tiles[-1].core_y == (3072, 4096)


def test_tile_bounds_in_map_units() -> None:
    t = next(iter(TileGrid(100, 100, 64, 16)))
    transform = Affine(0.2, 0, 1000.0, 0, -0.2, 2000.0)
    assert tile_bounds(t, transform) == pytest.approx((1000 - 3.2, 2000 - 64 * 0.2 + 3.2, 1000 - 3.2 + 12.8, 2003.2))


@pytest.mark.parametrize("tile,margin", [(64, 32), (64, 40), (10, -1)])
def test_bad_margins_are_rejected(tile: int, margin: int) -> None:
    with pytest.raises(ValueError, match="margin"):
        TileGrid(100, 100, tile, margin)


@pytest.mark.parametrize("out_res", [0.2, 0.4, 0.6, 0.1, 0.5, 1.6])
def test_output_cores_partition_output_and_sample_inside_core(out_res: float) -> None:
    width, height = 300, 220
    grid = TileGrid(width, height, 64, 16)
    og = OutputGrid(0.2, out_res, width, height)
    cover = np.zeros((og.height, og.width), dtype=np.int32)
    for t in grid:
        ys = og.out_range(t.core_y, height, og.height)
        xs = og.out_range(t.core_x, width, og.width)
        cover[ys[0]:ys[1], xs[0]:xs[1]] += 1
        for lo, hi, core in ((*ys, t.core_y), (*xs, t.core_x)):
            idx = og.sample_index(lo, hi, *core)
            assert all(core[0] <= i < core[1] for i in idx)
    assert (cover == 1).all()
    assert og.width == round(width * 0.2 / out_res)


def test_output_sampling_is_nearest_centre() -> None:
    og = OutputGrid(0.2, 0.6, 300, 300)
    # Output pixel j covers reference pixels 3j..3j+2; its centre is reference pixel 3j+1.
    assert og.sample_index(0, 5, 0, 300) == [1, 4, 7, 10, 13]
    assert og.transform(Affine(0.2, 0, 10.0, 0, -0.2, 50.0)) == Affine(0.6, 0, 10.0, 0, -0.6, 50.0)
