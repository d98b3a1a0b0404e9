"""`flair-toy --zonal DIR` writes a zonal test area next to the tree it generated."""

from pathlib import Path

import rasterio
import yaml

from tools import flair_toy


def test_flair_toy_zonal_flag_writes_area(tmp_path: Path) -> None:
    tree, area = tmp_path / "tree", tmp_path / "area"
    rc = flair_toy.main(["--out", str(tree), "--patches", "4", "--domains", "1", "--rois-per-domain", "1",
                         "--t-s2", "3", "4", "--t-s1", "3", "4", "--workers", "1", "--zonal", str(area)])
    assert rc == 0
    cfg = yaml.safe_load((area / "zonal.yaml").read_text())
    assert cfg["modalities"]["AERIAL_RGBI"]["input_img_path"].endswith("AERIAL_RGBI.tif")
    bounds = set()
    for name in ("AERIAL_RGBI", "SENTINEL2_TS", "AERIAL_LABEL-COSIA"):
        with rasterio.open(area / f"{name}.tif") as src:
            bounds.add(tuple(round(v, 2) for v in src.bounds))
    assert len(bounds) == 1, "every modality raster of the area must share the same bounds"
    assert (area / "SENTINEL2_TS_dates.txt").read_text().split()
