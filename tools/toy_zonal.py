"""A zonal-detection test area from a generated toy tree: one raster per modality over one ROI.

`flair-toy` writes patches of an ROI on a contiguous 102.4 m grid, each modality rendered from
the same synthetic ground. Pasting the patches of one ROI side by side gives what
`flair-zonal` expects: one raster per modality with the same bounds (each at its own
resolution), a `YYYYMMDD` dates file per series, the Sentinel-2 cloud mask, and the label mosaics
as the known answer. Every patch lands at an integer pixel offset, so the mosaic's window over a
patch equals that patch's file exactly. Cells of the ROI grid without a patch are zero.

    python -m tools.toy_zonal --tree toy/FLAIR-HUB_TOY --out toy_area [--roi D022-2021_FF-S2-N2]

writes `<out>/<MODALITY>.tif`, `<out>/<SERIES>_dates.txt`, `<out>/area.json` (patches and
their pixel offsets) and `<out>/zonal.yaml`, a ready config (set `model_weights`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import rasterio
import yaml
from affine import Affine
from rasterio.windows import Window

from packer.atomic import atomic_path
from trainer import builtin_config
from packer.metadata import read_series_dates
from packer.schema import (
    CLASS_TABLES,
    GLOBAL_MTD_FOLDER,
    INPUT_MODALITIES,
    MODALITIES,
    MODALITY_NAMES,
    PatchId,
    parse_file_name,
)


@dataclass
class ZonalArea:
    """What `build_zonal_area` wrote."""

    out_dir: Path
    roi: str  # "<DOMAIN>-<YEAR>_<ROI>"
    bounds: tuple[float, float, float, float]  # left, bottom, right, top
    rasters: dict[str, Path] = field(default_factory=dict)  # modality -> mosaic
    dates: dict[str, Path] = field(default_factory=dict)  # series -> dates file
    patches: dict[str, dict[str, Path]] = field(default_factory=dict)  # patch_id -> modality -> source file

    def patch_window(self, patch_id: str, modality: str) -> Window:
        """Where a patch sits in a modality's mosaic."""
        with rasterio.open(self.patches[patch_id][modality]) as src:
            b = src.bounds
        with rasterio.open(self.rasters[modality]) as dst:
            return rasterio.windows.from_bounds(*b, transform=dst.transform).round_offsets().round_lengths()


def _scan(tree: Path) -> dict[str, dict[str, dict[str, Path]]]:
    """roi key -> patch_id -> modality -> file, for every patch file of the tree."""
    rois: dict[str, dict[str, dict[str, Path]]] = defaultdict(lambda: defaultdict(dict))
    historical: list[tuple[Path, object]] = []
    for folder in sorted(p for p in tree.iterdir() if p.is_dir() and p.name != GLOBAL_MTD_FOLDER):
        for f in sorted(folder.glob("*/*.tif")):
            try:
                parsed = parse_file_name(f.name)
            except ValueError:
                continue
            if parsed.year is None:
                historical.append((f, parsed))
                continue
            pid = parsed.patch_id()
            rois[f"{pid.domain_year}_{pid.roi}"][str(pid)][parsed.modality] = f
    # Historical files say 195X: attach them to the patch of the same place (any year).
    for f, parsed in historical:
        for key, patches in rois.items():
            for pid_text, files in patches.items():
                pid = PatchId.parse(pid_text)
                if pid.location_key == parsed.location_key:
                    files[parsed.modality] = f
    return rois


def _mosaic(files: Sequence[Path], out: Path) -> tuple[float, float, float, float]:
    """Paste same-resolution patch files into one raster covering their union; returns its bounds."""
    metas = []
    for f in files:
        with rasterio.open(f) as src:
            metas.append((f, src.bounds, src.res, src.count, src.dtypes[0], src.crs))
    res = metas[0][2]
    for f, _, r, count, dtype, crs in metas:
        if r != res or count != metas[0][3] or dtype != metas[0][4] or crs != metas[0][5]:
            raise ValueError(f"{f}: resolution/bands/dtype/CRS differ from {metas[0][0]} (cannot mosaic)")
    left = min(m[1].left for m in metas)
    top = max(m[1].top for m in metas)
    right = max(m[1].right for m in metas)
    bottom = min(m[1].bottom for m in metas)
    width = round((right - left) / res[0])
    height = round((top - bottom) / res[1])
    transform = Affine(res[0], 0.0, left, 0.0, -res[1], top)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": metas[0][3], "dtype": metas[0][4],
               "crs": metas[0][5], "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate", "interleave": "band" if metas[0][3] > 8 else "pixel", "BIGTIFF": "IF_SAFER"}
    if width < 256 or height < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    with atomic_path(out) as tmp:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(tmp, "w", **profile) as dst:
            for f, b, *_ in metas:
                col = round((b.left - left) / res[0])
                row = round((top - b.top) / res[1])
                with rasterio.open(f) as src:
                    dst.write(src.read(), window=Window(col, row, src.width, src.height))
    return (left, bottom, right, top)


def build_zonal_area(tree: str | Path, out: str | Path, roi: str | None = None,
                     modalities: Sequence[str] = MODALITY_NAMES) -> ZonalArea:
    """Mosaic one ROI of a toy tree (default: the ROI with most patches) into `out`."""
    tree, out = Path(tree), Path(out)
    rois = _scan(tree)
    if not rois:
        raise FileNotFoundError(f"{tree}: no FLAIR-HUB patch files found")
    if roi is None:
        roi = max(sorted(rois), key=lambda k: len(rois[k]))
    elif roi not in rois:
        matches = [k for k in rois if k.endswith(f"_{roi}")]
        if len(matches) != 1:
            raise KeyError(f"ROI {roi!r} not in {tree} (has {sorted(rois)})")
        roi = matches[0]
    patches = rois[roi]
    out.mkdir(parents=True, exist_ok=True)
    area = ZonalArea(out, roi, (0.0, 0.0, 0.0, 0.0), patches={p: dict(f) for p, f in patches.items()})
    all_bounds = []
    for m in modalities:
        files = [f[m] for f in patches.values() if m in f]
        if not files:
            continue
        if len(files) != len(patches):
            raise ValueError(f"{roi}: {len(patches) - len(files)} patch(es) lack {m}; mosaics need every patch")
        area.rasters[m] = out / f"{m}.tif"
        all_bounds.append(_mosaic(files, area.rasters[m]))
    for b in all_bounds[1:]:
        if max(abs(x - y) for x, y in zip(b, all_bounds[0])) > 1e-6:
            raise ValueError(f"{roi}: modality mosaics do not cover the same area ({b} vs {all_bounds[0]})")
    area.bounds = all_bounds[0]
    mtd = tree / GLOBAL_MTD_FOLDER
    for m in area.rasters:
        if not MODALITIES[m].time_series or m not in INPUT_MODALITIES or m == "SENTINEL2_MSK-SC":
            continue
        by_patch = read_series_dates(mtd, m)
        dates = {by_patch[p] for p in patches}
        if len(dates) != 1:
            raise ValueError(f"{roi}: patches do not share the dates of {m}; a single area raster needs one series")
        area.dates[m] = out / f"{m}_dates.txt"
        area.dates[m].write_text("\n".join(next(iter(dates))) + "\n", encoding="utf-8")
    doc = {"roi": roi, "bounds": list(area.bounds), "rasters": {k: v.name for k, v in area.rasters.items()},
           "dates": {k: v.name for k, v in area.dates.items()},
           "patches": {p: {m: str(f) for m, f in fs.items()} for p, fs in area.patches.items()}}
    (out / "area.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return area



def load_zonal_area(out: str | Path) -> ZonalArea:
    """The area `build_zonal_area` wrote to `out`, from its `area.json` (the source tree may be gone)."""
    out = Path(out)
    doc = json.loads((out / "area.json").read_text(encoding="utf-8"))
    return ZonalArea(out, doc["roi"], tuple(doc["bounds"]), {k: out / v for k, v in doc["rasters"].items()},
                     {k: out / v for k, v in doc["dates"].items()},
                     {p: {m: Path(f) for m, f in fs.items()} for p, fs in doc["patches"].items()})


DEFAULT_MODALITIES_YAML = builtin_config("flair-hub") / "config_modalities.yaml"


def default_statistics(path: Path = DEFAULT_MODALITIES_YAML) -> dict[str, tuple[list[int] | None, list[float], list[float]]]:
    """Per mono-temporal input: (channels, means, stds) of the shipped FLAIR-HUB defaults.

    Read from `configs/flair-hub/config_modalities.yaml` so the statistics live in one place;
    statistics are indexed by position among the selected channels, as in the reference.
    """
    mods = yaml.safe_load(path.read_text(encoding="utf-8"))["modalities"]
    norm, channels = mods["normalization"], mods.get("inputs_channels") or {}
    out = {}
    for m in ("AERIAL_RGBI", "AERIAL-RLT_PAN", "SPOT_RGBI", "DEM_ELEV"):
        chans = channels.get(m) or ([1] if MODALITIES[m].bands_per_date == 1 else None)
        n = len(chans) if chans else len(norm[f"{m}_means"])
        out[m] = (chans, list(norm[f"{m}_means"][:n]), list(norm[f"{m}_stds"][:n]))
    return out


def zonal_config(area: ZonalArea, model_weights: str | Path, inputs: Sequence[str] = ("AERIAL_RGBI",),
                 tasks: Sequence[str] = ("AERIAL_LABEL-COSIA",), **overrides: object) -> dict:
    """A zonal config over `area` with the reference's keys (FLAIR-HUB default statistics)."""
    stats = default_statistics()
    mods: dict[str, object] = {"inputs": {m: m in inputs for m in INPUT_MODALITIES if m != "SENTINEL2_MSK-SC"}}
    for m in inputs:
        if m not in area.rasters:
            raise KeyError(f"{m}: not in the area (has {sorted(area.rasters)})")
        block: dict[str, object] = {"input_img_path": str(area.rasters[m])}
        if MODALITIES[m].time_series:
            block.update(dates_txt=str(area.dates[m]), channels=list(range(1, MODALITIES[m].bands_per_date + 1)))
            if m == "SENTINEL2_TS" and "SENTINEL2_MSK-SC" in area.rasters:
                block.update(filter_clouds=True, filter_clouds_img_path=str(area.rasters["SENTINEL2_MSK-SC"]))
        else:
            chans, means, stds = stats[m]
            if chans:
                block["channels"] = chans
            block["normalization"] = {"type": "custom", "means": means, "stds": stds}
            if m == "DEM_ELEV":
                block.update(calc_elevation=True, calc_elevation_stack_dsm=True)
        mods[m] = block
    cfg: dict[str, object] = {
        "output_path": str(area.out_dir / "zonal_out"), "output_name": area.roi, "output_type": "argmax",
        "cog_conversion": False, "model_weights": str(model_weights), "use_gpu": False, "batch_size": 2,
        "num_worker": 0, "img_pixels_detection": 1024, "margin": 256, "output_px_meters": 0.2,
        "multitemp_model_ref_date": "05-15", "modalities": mods,
        "tasks": [{"name": t, "active": True, "class_names": {c.value: c.name for c in CLASS_TABLES[t]}} for t in tasks],
    }
    cfg.update(overrides)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.toy_zonal", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True, help="a tree written by flair-toy")
    parser.add_argument("--out", required=True, help="output folder for the area rasters")
    parser.add_argument("--roi", default=None, help="<DOMAIN>-<YEAR>_<ROI> or <ROI> (default: the largest)")
    parser.add_argument("--weights", default="model.safetensors", help="model_weights written into zonal.yaml")
    args = parser.parse_args(argv)
    try:
        area = build_zonal_area(args.tree, args.out, args.roi)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"toy_zonal: {exc}", file=sys.stderr)
        return 1
    inputs = [m for m in ("AERIAL_RGBI",) if m in area.rasters]
    cfg_path = Path(args.out) / "zonal.yaml"
    cfg_path.write_text(yaml.safe_dump(zonal_config(area, args.weights, inputs), sort_keys=False), encoding="utf-8")
    w, b = area.bounds[2] - area.bounds[0], area.bounds[3] - area.bounds[1]
    print(f"{area.roi}: {len(area.patches)} patches, {w:.1f} x {b:.1f} m, {len(area.rasters)} rasters -> {args.out}")
    print(f"config: {cfg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
