"""`read_all_bands` must return exactly what `rasterio.open(path).read()` returns, only faster."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from packer.geotiffs import read_all_bands


def _write(path, arr: np.ndarray, interleave: str, nodata=None, **extra) -> None:
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype,
                   crs="EPSG:2154", transform=from_origin(600000, 6800000, 10, 10), interleave=interleave,
                   nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_same_array_as_rasterio_read(tmp_path, dtype, interleave):
    rng = np.random.default_rng(0)
    arr = (rng.random((300, 7, 9)) * 1000).astype(dtype)  # many bands: the case read() is slow on
    if arr.dtype.kind == "f":
        arr[3, 2, 1] = np.nan
    path = tmp_path / "a.tif"
    _write(path, arr, interleave, nodata=0)
    with rasterio.open(path) as src:
        assert callable(getattr(src, "_read", None)), "this rasterio has no fast path: the test would prove nothing"
        expected = src.read()
        got = read_all_bands(src)
    assert got.dtype == expected.dtype and got.shape == expected.shape == arr.shape
    assert got.tobytes() == expected.tobytes()  # bit-exact, NaN included


@pytest.mark.parametrize("extra", [dict(compress="deflate", predictor=2), dict(tiled=True, blockxsize=16, blockysize=16)])
def test_compressed_and_tiled(tmp_path, extra):
    arr = np.arange(4 * 40 * 48, dtype="uint16").reshape(4, 40, 48)
    path = tmp_path / "b.tif"
    _write(path, arr, "pixel", **extra)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(read_all_bands(src), arr)


class _NoPrivateRead:
    """A reader without rasterio's private `_read` (another rasterio version)."""

    def __init__(self, src):
        self._src = src
        self.dtypes = src.dtypes

    def read(self, window=None):
        return self._src.read(window=window)


class _ChangedPrivateRead(_NoPrivateRead):
    count, height, width, indexes = 1, 1, 1, (1,)

    def _read(self, *args, **kwargs):
        raise TypeError("_read() takes other arguments now")


@pytest.mark.parametrize("wrapper", [_NoPrivateRead, _ChangedPrivateRead])
def test_falls_back_to_public_read(tmp_path, wrapper):
    arr = np.arange(2 * 3 * 5, dtype="float32").reshape(2, 3, 5)
    path = tmp_path / "c.tif"
    _write(path, arr, "pixel")
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(read_all_bands(wrapper(src)), arr)


@pytest.mark.parametrize("window", [Window(0, 0, 9, 7), Window(2, 3, 4, 2), Window(8, 6, 1, 1),
                                    Window(1.5, 0, 3, 3), Window(-1, 0, 3, 3), Window(7, 5, 4, 4)])
def test_windows_match_rasterio(tmp_path, window):
    """Whole-pixel windows inside the raster take the fast path; the others rasterio's own (same result)."""
    arr = np.arange(400 * 7 * 9, dtype="int16").reshape(400, 7, 9)
    path = tmp_path / "w.tif"
    _write(path, arr, "pixel")
    with rasterio.open(path) as src:
        expected = src.read(window=window)
        got = read_all_bands(src, window)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
