"""`read_resampled` gives exactly the reference's boundless `out_shape` read, band chunks and all."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from inference import zonal_reader
from inference.zonal_reader import read_resampled

# rasterio's own window_transform uses Affine `*`, deprecated by affine: thousands of lines of noise here
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def _raster(path, dtype, nodata, bands=23, size=60):
    rng = np.random.default_rng(7)
    arr = (rng.random((bands, size, size)) * 3000).astype(dtype)
    arr[:, 5:9, 5:9] = 0  # some zeros: the boundless read treats the fill value as nodata
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype=dtype,
                       crs="EPSG:2154", transform=from_origin(600000, 6800000, 10, 10), nodata=nodata) as dst:
        dst.write(arr)


@pytest.mark.parametrize("dtype,nodata", [("uint8", None), ("uint16", 0), ("float32", None), ("float32", -9999.0)])
def test_same_values_as_the_boundless_read(tmp_path, monkeypatch, dtype, nodata):
    monkeypatch.setattr(zonal_reader, "RESAMPLE_BAND_CHUNK", 7)  # several chunks, one short
    path = tmp_path / "r.tif"
    _raster(path, dtype, nodata)
    rng = np.random.default_rng(11)
    with rasterio.open(path) as src:
        for _ in range(40):
            span = float(rng.choice([40.96, 10.24, 20.48, 12.8, 5.12]))
            col, row = rng.uniform(-20, 60 - span + 20), rng.uniform(-20, 60 - span + 20)  # inside, across, outside
            size = max(1, round(span * float(rng.choice([1.0, 0.5, 2.0]))))
            window = Window(col, row, span, span)
            for resampling in (Resampling.bilinear, Resampling.nearest):
                expected = src.read(window=window, out_shape=(src.count, size, size), resampling=resampling,
                                    boundless=True, fill_value=0)
                got = read_resampled(src, window, size, resampling)
                assert got.dtype == expected.dtype and got.shape == expected.shape
                assert got.tobytes() == expected.tobytes(), (col, row, span, size, resampling)


def test_window_far_outside_is_all_fill(tmp_path):
    path = tmp_path / "r.tif"
    _raster(path, "uint16", None, bands=3)
    with rasterio.open(path) as src:
        window = Window(500.5, -300.25, 10.24, 10.24)
        expected = src.read(window=window, out_shape=(3, 10, 10), boundless=True, fill_value=0)
        got = read_resampled(src, window, 10, Resampling.bilinear)
    assert not got.any() and got.tobytes() == expected.tobytes()
