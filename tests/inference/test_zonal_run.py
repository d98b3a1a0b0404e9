"""flair-zonal end to end with a copy-the-input model: exact maps, georeferencing, COG, resume, errors, memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from inference import zonal as zonal_mod
from inference.cli import zonal_main
from inference.standin import CopyBandModel, FailOnCalls
from inference.zonal import ZonalError, run_zonal
from inference.zonal_config import validate_zonal_config
from inference.zonal_reader import AreaRasters, ZonalInputError

COSIA = "AERIAL_LABEL-COSIA"
X0, Y0 = 700_000.0, 6_600_000.0
NAMES = {i: f"class {i}" for i in range(19)}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def write_area(path: Path, arr: np.ndarray, res: float) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs="EPSG:2154", transform=from_origin(X0, Y0, res, res)) as dst:
        dst.write(arr)
    return path


def base_cfg(tmp: Path, modalities: dict[str, Any], **over: Any) -> dict[str, Any]:
    weights = tmp / "weights.safetensors"
    weights.write_bytes(b"stand-in")
    cfg = dict(output_path=str(tmp / "out"), output_name="area", model_weights=str(weights),
               img_pixels_detection=64, margin=16, output_px_meters=0.2, batch_size=3,
               modalities=modalities, tasks=[{"name": COSIA, "active": True, "class_names": dict(NAMES)}])
    cfg.update(over)
    return validate_zonal_config(cfg, base_dir=tmp)


@pytest.fixture()
def aerial(tmp_path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 19, (4, 220, 300), dtype=np.uint8)
    path = write_area(tmp_path / "aerial.tif", arr, 0.2)
    mods = {"inputs": {"AERIAL_RGBI": True},
            "AERIAL_RGBI": {"input_img_path": str(path), "channels": [1, 2, 3], "normalization": {"type": "without"}}}
    return arr, mods


def copy_model(modality: str = "AERIAL_RGBI", band: int = 0) -> CopyBandModel:
    return CopyBandModel(modality, band, {COSIA: 19})


def read(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    with rasterio.open(path) as src:
        return src.read(), {"profile": src.profile, "tags": src.tags(), "cmap": src.colormap(1) if src.count == 1 else None,
                            "overviews": src.overviews(1), "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")}


def test_copy_model_gives_the_exact_map_with_source_georeferencing(tmp_path, aerial) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, write_dataframe=True, num_worker=1)  # one reading process
    report = run_zonal(cfg, model=copy_model(), progress=False)
    assert report.tiles_total == report.tiles_done == 10 * 7 and not report.failed
    import pyogrio

    assert pyogrio.read_info(tmp_path / "out" / "area_slicing_job.gpkg")["features"] == 70
    out, info = read(report.outputs[0])
    np.testing.assert_array_equal(out[0], arr[0])  # no seams, no offsets, correct edges
    prof = info["profile"]
    assert prof["transform"] == from_origin(X0, Y0, 0.2, 0.2) and prof["crs"].to_epsg() == 2154
    assert (prof["width"], prof["height"], prof["dtype"]) == (300, 220, "uint8")
    assert info["tags"]["CLASS_3"] == "class 3" and info["tags"]["TASK"] == COSIA
    assert info["cmap"][0][:3] == (0xDB, 0x0E, 0x9A)  # official CoSIA colour of class 0 (building)
    assert Path(report.outputs[0]).with_suffix(".qml").is_file()
    assert not (tmp_path / "out" / "area.tiles").exists(), "work folder removed after success"


@pytest.mark.parametrize("out_res,step", [(0.4, 2), (0.6, 3)])
def test_coarser_output_resolution_samples_pixel_centres(tmp_path, aerial, out_res: float, step: int) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, output_px_meters=out_res)
    report = run_zonal(cfg, model=copy_model(), progress=False)
    out, info = read(report.outputs[0])
    h, w = round(220 / step), round(300 / step)
    assert out.shape == (1, h, w)
    np.testing.assert_array_equal(out[0], arr[0][step // 2 :: step, step // 2 :: step][:h, :w])
    assert info["profile"]["transform"] == from_origin(X0, Y0, out_res, out_res)


def test_coarse_modality_is_read_on_its_own_grid(tmp_path) -> None:
    """SPOT at 1.6 m beside aerial at 0.2 m: copying a SPOT band gives it upsampled x8, aligned."""
    rng = np.random.default_rng(1)
    aer = rng.integers(0, 255, (4, 224, 320), dtype=np.uint8)
    spot = rng.integers(0, 19, (4, 28, 40), dtype=np.uint16)
    mods = {"inputs": {"AERIAL_RGBI": True, "SPOT_RGBI": True},
            "AERIAL_RGBI": {"input_img_path": str(write_area(tmp_path / "a.tif", aer, 0.2)), "normalization": {"type": "without"}},
            "SPOT_RGBI": {"input_img_path": str(write_area(tmp_path / "s.tif", spot, 1.6)), "channels": [2, 1],
                          "normalization": {"type": "without"}}}
    cfg = base_cfg(tmp_path, mods)
    areas = AreaRasters(cfg)
    assert areas.reference == "AERIAL_RGBI" and areas.tile_sizes == {"AERIAL_RGBI": 64, "SPOT_RGBI": 8}
    report = run_zonal(cfg, model=copy_model("SPOT_RGBI", 0), progress=False)  # channels [2, 1]: band 2 first
    out, _ = read(report.outputs[0])
    np.testing.assert_array_equal(out[0], np.kron(spot[1], np.ones((8, 8), dtype=np.uint16)))


def _s2_area(tmp_path: Path, cloudy_first: bool) -> tuple[np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng(2)
    t, h, w = 3, 30, 45
    s2 = rng.integers(0, 19, (t * 10, h, w), dtype=np.uint16)
    mask = np.zeros((t * 2, h, w), dtype=np.uint8)
    if cloudy_first:
        mask[1] = 90  # date 0, cloud band
    (tmp_path / "dates.txt").write_text("20210110\n20210301\n20210720\n")
    mods = {"inputs": {"SENTINEL2_TS": True},
            "SENTINEL2_TS": {"input_img_path": str(write_area(tmp_path / "s2.tif", s2, 10.24)),
                             "dates_txt": "dates.txt", "filter_clouds": True,
                             "filter_clouds_img_path": str(write_area(tmp_path / "m.tif", mask, 10.24))}}
    return s2, mods


@pytest.mark.parametrize("cloudy_first", [False, True])
def test_series_cloud_filter_applies_per_tile_without_side_effects(tmp_path, cloudy_first: bool) -> None:
    s2, mods = _s2_area(tmp_path, cloudy_first)
    cfg = base_cfg(tmp_path, mods, img_pixels_detection=16, margin=4, output_px_meters=10.24, batch_size=2)
    report = run_zonal(cfg, model=copy_model("SENTINEL2_TS", 0), progress=False)
    out, _ = read(report.outputs[0])
    # The model copies band 0 of the first date it receives: date 1 when date 0 is filtered out.
    np.testing.assert_array_equal(out[0], s2[10 if cloudy_first else 0])


def test_class_prob_bands_sum_to_255(tmp_path, aerial) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, output_type="class_prob")
    report = run_zonal(cfg, model=copy_model(), progress=False)
    assert report.outputs[0].endswith("_class-prob.tif")
    out, info = read(report.outputs[0])
    assert out.shape == (19, 220, 300)
    total = out.astype(np.int32).sum(axis=0)
    assert np.abs(total - 255).max() <= 19 // 2 + 1  # rounding of 19 shares
    np.testing.assert_array_equal(out.argmax(axis=0), arr[0])


def test_cog_output_is_tiled_with_overviews(tmp_path) -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 19, (4, 640, 1100), dtype=np.uint8)
    mods = {"inputs": {"AERIAL_RGBI": True},
            "AERIAL_RGBI": {"input_img_path": str(write_area(tmp_path / "a.tif", arr, 0.2)), "normalization": {"type": "without"}}}
    cfg = base_cfg(tmp_path, mods, img_pixels_detection=320, margin=32, cog_conversion=True, compression="zstd",
                   batch_size=2)
    report = run_zonal(cfg, model=copy_model(), progress=False)
    path = report.outputs[0]
    assert path.endswith("_argmax_COG.tif")
    assert not Path(path.replace("_COG.tif", ".tif")).exists()
    out, info = read(path)
    np.testing.assert_array_equal(out[0], arr[0])
    assert info["layout"] == "COG"
    assert info["profile"]["tiled"] and info["profile"]["blockxsize"] == 512
    assert info["overviews"], "a COG of 1100 px carries overviews"
    assert info["cmap"][8][:3] == (0x55, 0xFF, 0x00)


def test_failed_tiles_are_named_and_a_rerun_resumes_only_them(tmp_path, aerial) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, batch_size=1)
    flaky = FailOnCalls(copy_model(), calls={5, 9})
    with pytest.raises(ZonalError) as info:
        run_zonal(cfg, model=flaky, progress=False)
    msg = str(info.value)
    assert "2 of 70 tiles failed" in msg and "r0000-c0004" in msg and "r0000-c0008" in msg
    assert not list((tmp_path / "out").glob("*.tif")), "no mosaic with holes"
    fresh = copy_model()
    report = run_zonal(cfg, model=fresh, progress=False)
    assert fresh.calls == 2 and report.tiles_skipped == 68 and report.tiles_done == 2
    np.testing.assert_array_equal(read(report.outputs[0])[0][0], arr[0])


def test_a_failing_tile_in_a_batch_does_not_lose_the_others(tmp_path, aerial) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, batch_size=4)
    # Call 1 is the first batch of 4; it fails, and the retries one by one (calls 2-5) succeed.
    report = run_zonal(cfg, model=FailOnCalls(copy_model(), calls={1}), progress=False)
    assert not report.failed
    np.testing.assert_array_equal(read(report.outputs[0])[0][0], arr[0])


def test_read_errors_are_reported_with_the_tile_id(tmp_path, aerial, monkeypatch) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods)
    real = AreaRasters.read_tile

    def flaky(self, tile):
        if tile.id == "r0003-c0002":
            raise OSError("disk hiccup")
        return real(self, tile)

    monkeypatch.setattr(AreaRasters, "read_tile", flaky)
    with pytest.raises(ZonalError, match=r"r0003-c0002: OSError: disk hiccup"):
        run_zonal(cfg, model=copy_model(), progress=False)
    monkeypatch.setattr(AreaRasters, "read_tile", real)
    report = run_zonal(cfg, model=copy_model(), progress=False)
    assert report.tiles_done == 1


def test_resume_refuses_tiles_of_a_different_run(tmp_path, aerial) -> None:
    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods, batch_size=1)
    with pytest.raises(ZonalError):
        run_zonal(cfg, model=FailOnCalls(copy_model(), calls={3}), progress=False)
    other = base_cfg(tmp_path, mods, batch_size=1, margin=8)
    with pytest.raises(ZonalError, match="different settings.*tile"):
        run_zonal(other, model=copy_model(), progress=False)
    other["resume"] = False  # start over
    assert not run_zonal(other, model=copy_model(), progress=False).failed


def test_mismatched_inputs_are_rejected_with_file_names(tmp_path) -> None:
    a = write_area(tmp_path / "a.tif", np.zeros((4, 64, 64), np.uint8), 0.2)
    s = write_area(tmp_path / "s.tif", np.zeros((4, 9, 9), np.uint16), 1.6)  # 14.4 m != 12.8 m
    mods = {"inputs": {"AERIAL_RGBI": True, "SPOT_RGBI": True},
            "AERIAL_RGBI": {"input_img_path": str(a)}, "SPOT_RGBI": {"input_img_path": str(s)}}
    with pytest.raises(ZonalInputError, match=r"modalities\.SPOT_RGBI: bounds of .*s\.tif"):
        AreaRasters(base_cfg(tmp_path, mods))
    s2 = write_area(tmp_path / "s2.tif", np.zeros((25, 4, 4), np.uint16), 10.24)
    (tmp_path / "d.txt").write_text("20210101\n20210201\n")
    mods = {"inputs": {"SENTINEL2_TS": True}, "SENTINEL2_TS": {"input_img_path": str(s2), "dates_txt": "d.txt"}}
    with pytest.raises(ZonalInputError, match=r"s2\.tif has 25 bands, expected 20 \(2 dates x 10 bands\)"):
        AreaRasters(base_cfg(tmp_path, mods))


def _peak_bytes(tmp_path: Path, tiles_wide: int) -> int:
    tmp_path.mkdir()
    stride = 96
    arr = np.random.default_rng(4).integers(0, 19, (4, 2 * stride, tiles_wide * stride), dtype=np.uint8)
    mods = {"inputs": {"AERIAL_RGBI": True},
            "AERIAL_RGBI": {"input_img_path": str(write_area(tmp_path / "a.tif", arr, 0.2)), "normalization": {"type": "without"}}}
    cfg = base_cfg(tmp_path, mods, img_pixels_detection=128, margin=16, batch_size=2)
    del arr
    tracemalloc.start()
    try:
        report = run_zonal(cfg, model=copy_model(), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.tiles_total == 2 * tiles_wide
    return peak


def test_peak_memory_does_not_grow_with_the_area(tmp_path) -> None:
    small = _peak_bytes(tmp_path / "small", 3)
    large = _peak_bytes(tmp_path / "large", 24)  # 8x the area
    # Holding even the large area's uint8 map (24 * 96 * 192 B = 442 KB) would break this bound.
    assert large < 1.1 * small, (small, large)


def test_cli_runs_a_config_file_and_reports_errors(tmp_path, aerial, monkeypatch, capsys) -> None:
    import yaml

    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods)
    path = tmp_path / "zonal.yaml"
    path.write_text(yaml.safe_dump({**cfg, "tasks": cfg["tasks"]}))
    monkeypatch.setattr(zonal_mod, "default_model_loader", lambda c, s, d: copy_model())
    assert zonal_main(["--config", str(path), "--no-progress"]) == 0
    assert "km2/h" in capsys.readouterr().out
    np.testing.assert_array_equal(read(str(tmp_path / "out" / f"area_{COSIA}_argmax.tif"))[0][0], arr[0])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "margin": 40}))
    assert zonal_main(["--config", str(bad)]) == 2
    assert "margin" in capsys.readouterr().err


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path, aerial) -> None:
    from inference.zonal_resume import WorkDir

    arr, mods = aerial
    cfg = base_cfg(tmp_path, mods)
    holder = WorkDir(tmp_path / "out" / "area.tiles", {"other": 1}, [COSIA], resume=True)
    try:
        with pytest.raises(ZonalError, match="another flair-zonal run is writing"):
            run_zonal(cfg, model=copy_model(), progress=False)
    finally:
        holder.close()
    cfg["resume"] = False  # the holder's folder has other settings: start over once it is released
    np.testing.assert_array_equal(read(run_zonal(cfg, model=copy_model(), progress=False).outputs[0])[0][0], arr[0])
