"""flair-zonal on an area mosaicked from a generated toy ROI (tools/toy_zonal.py): a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from inference.cli import zonal_main
from inference.standin import CopyBandModel
from inference.zonal import run_zonal
from inference.zonal_config import validate_zonal_config
from packer.schema import MODALITY_NAMES
from tools.toy_zonal import build_zonal_area, zonal_config
from trainer.train_config import read_config_layers

REPO = Path(__file__).resolve().parents[2]
COSIA = "AERIAL_LABEL-COSIA"


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def area(toy_tree, tmp_path_factory):
    return build_zonal_area(toy_tree.root, tmp_path_factory.mktemp("zonal_area") / "area")


def test_mosaics_hold_every_patch_exactly_in_place(area) -> None:
    assert set(area.rasters) == set(MODALITY_NAMES)
    assert len(area.patches) >= 3, "the largest ROI of the shared toy tree has several patches"
    bounds = set()
    for m, path in area.rasters.items():
        with rasterio.open(path) as mosaic:
            bounds.add(tuple(round(v, 6) for v in mosaic.bounds))
            for pid, files in area.patches.items():
                with rasterio.open(files[m]) as patch:
                    window = area.patch_window(pid, m)
                    np.testing.assert_array_equal(mosaic.read(window=window), patch.read(), err_msg=f"{pid} {m}")
    assert len(bounds) == 1, "all modalities cover the same area"
    dates = area.dates["SENTINEL2_TS"].read_text().split()
    with rasterio.open(area.rasters["SENTINEL2_TS"]) as s2:
        assert s2.count == 10 * len(dates)


def test_zonal_reproduces_the_area_through_every_reader(area, tmp_path) -> None:
    """All inputs active (series resampled: 25.6 m margins are not whole Sentinel pixels); the
    stand-in copies aerial band 1 (mod 19), so the answer is known pixel for pixel."""
    raw = zonal_config(area, area.rasters["AERIAL_RGBI"],
                       inputs=("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS",
                               "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"),
                       img_pixels_detection=512, margin=128, batch_size=2, output_path=str(tmp_path))
    raw["modalities"]["AERIAL_RGBI"].update(channels=[1, 2, 3], normalization={"type": "without"})
    cfg = validate_zonal_config(raw)
    report = run_zonal(cfg, model=CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19}, modulo=True), progress=False)
    assert report.tiles_total == 16 and not report.failed
    with rasterio.open(report.outputs[0]) as out, rasterio.open(area.rasters["AERIAL_RGBI"]) as aer, \
            rasterio.open(area.rasters[COSIA]) as label:
        np.testing.assert_array_equal(out.read(1), aer.read(1) % 19)
        assert (out.crs, out.transform, out.shape) == (label.crs, label.transform, label.shape)


def _tiny_checkpoint(tmp: Path) -> Path:
    from trainer.model import build_model, save_model

    raw = read_config_layers([REPO / "configs" / "flair-hub"])
    raw["models"]["monotemp_model"] = {"arch": "mobilenet_v2-fpn", "new_channels_init_mode": "random"}
    # A series-only model: cheap on 2 busy cores, and it exercises dates, padding and the U-TAE path.
    raw["modalities"]["inputs"] = {m: m == "SENTINEL2_TS" for m in raw["modalities"]["inputs"]}
    torch.manual_seed(0)
    weights, _ = save_model(build_model(raw), tmp / "tiny")
    return weights


def test_flair_zonal_cli_with_a_real_checkpoint(area, tmp_path) -> None:
    weights = _tiny_checkpoint(tmp_path)
    # The finest input is Sentinel-2 (10.24 m): tiles of 16 px with 3 px margins; output at 1.6 m.
    raw = zonal_config(area, weights, inputs=("SENTINEL2_TS",), img_pixels_detection=16, margin=3,
                       output_path=str(tmp_path / "out"), cog_conversion=True, output_px_meters=1.6)
    path = tmp_path / "zonal.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert zonal_main(["--config", str(path), "--no-progress"]) == 0
    out_file = tmp_path / "out" / f"{area.roi}_{COSIA}_argmax_COG.tif"
    with rasterio.open(out_file) as out, rasterio.open(area.rasters[COSIA]) as label:
        pred = out.read(1)
        assert out.shape == (label.height // 8, label.width // 8)
        assert out.transform == rasterio.Affine(1.6, 0, label.transform.c, 0, -1.6, label.transform.f)
        assert out.crs == label.crs
        assert pred.max() < 19
    assert list((tmp_path / "out").glob(f"{area.roi}_*.log")), "a run log beside the outputs"


def test_reference_weights_load_from_the_zonal_keys_alone(area, tmp_path) -> None:
    """A plain `.pth` state dict (no config of ours): the model is built from the zonal keys, as the
    reference's script does, and predicts exactly what our checkpoint of the same weights does."""
    ours = _tiny_checkpoint(tmp_path)
    from safetensors.torch import load_file

    pth = tmp_path / "reference.pth"
    torch.save(load_file(str(ours)), pth)
    outputs = []
    for name, weights in (("ours", ours), ("ref", pth)):
        raw = zonal_config(area, weights, inputs=("SENTINEL2_TS",), img_pixels_detection=16, margin=3,
                           output_path=str(tmp_path / name), output_px_meters=10.24)
        report = run_zonal(validate_zonal_config(raw), progress=False)
        with rasterio.open(report.outputs[0]) as src:
            outputs.append(src.read(1))
    np.testing.assert_array_equal(outputs[0], outputs[1])
