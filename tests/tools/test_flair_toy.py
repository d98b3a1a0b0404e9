"""flair-toy: the synthetic tree must be structurally indistinguishable from FLAIR-HUB.

Everything is read back with rasterio / pyogrio / csv, never from the generator's own objects,
except to know what was asked for.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from pyogrio.raw import read as ogr_read

from packer.schema import (
    ACQUISITION_DATES_COLUMN,
    DOMAIN_YEARS,
    GEOM_FILE,
    FILE_NAME_RE,
    GLOBAL_MTD_FILES,
    GLOBAL_MTD_FOLDER,
    MODALITIES,
    MODALITY_NAMES,
    OFFICIAL_TEST_DOMAINS,
    PATCH_METERS,
    SENTINEL_DATES_FILES,
    SINGLE_DATE_COLUMN,
    SINGLE_DATE_FILES,
    SPLIT_CSV_COLUMNS,
    SPLIT_CSV_NAMES,
    SPLIT_FILE,
    PatchId,
    parse_file_name,
)
from tools.flair_toy import ToyConfig, generate, main
from tools.toy.plan import ROI_NAME_RE
from tools.toy.scene import L2_PARENT, L3_PARENT

OFFICIAL_ID_RE = re.compile(r"^D\d{3}(\d{3})?-\d{4}_[UAFNV]{2}-S[12]-[UVN]?\d+_\d+-\d+$")
DATA = Path(__file__).parent / "data"
OFFICIAL_CSVS = [DATA / f"FLAIR-HUB_TOY-DATASET_{s}.csv" for s in ("TRAIN", "VALID", "TEST")]
"""The header and first five rows of each official toy-dataset split CSV (FLAIR-HUB on the Hub)."""
REFERENCE_FILTER = dict(max_cloud=1, max_snow=1, min_clear_share=0.95)  # the reference's S2 filter defaults


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def tif_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tif"))


def gpkg_rows(root: Path, name: str) -> dict[str, dict]:
    _, _, geometry, field_data = ogr_read(root / GLOBAL_MTD_FOLDER / name)[:4]
    info = pyogrio.read_info(root / GLOBAL_MTD_FOLDER / name)
    cols = list(info["fields"])
    rows = {}
    for i, pid in enumerate(field_data[cols.index("patch_id")]):
        rows[pid] = {c: field_data[j][i] for j, c in enumerate(cols)} | {"geometry": geometry[i]}
    return rows


def series_dates(root: Path) -> dict[str, dict[str, list[str]]]:
    """series -> patch -> dates, from the GeoPackages."""
    out = {}
    for series, fname in SENTINEL_DATES_FILES.items():
        rows = gpkg_rows(root, fname)
        out[series] = {}
        for pid, row in rows.items():
            d = json.loads(row[ACQUISITION_DATES_COLUMN])
            assert list(d) == [str(i + 1) for i in range(len(d))], f"{fname}: keys of {pid} not '1'..'T'"
            out[series][pid] = list(d.values())
    return out


# --------------------------------------------------------------------------------------------
# Layout and naming
# --------------------------------------------------------------------------------------------
def test_tree_layout_and_names(toy_tree):
    root, res = toy_tree
    files = tif_files(root)
    assert len(files) == len(res.patch_ids) * len(MODALITY_NAMES)
    for path in files:
        rel = path.relative_to(root)
        assert len(rel.parts) == 3, rel
        folder, roi, name = rel.parts
        assert FILE_NAME_RE.match(name), name
        parsed = parse_file_name(name)
        assert folder == name.rsplit(f"_{roi}_", 1)[0], f"{rel}: folder is not the file's <DOMAIN>-<YEAR>_<MODALITY>"
        assert roi == parsed.roi and ROI_NAME_RE.match(roi), roi
        if MODALITIES[parsed.modality].historical:
            assert folder.startswith(f"{parsed.domain}-195X_"), rel
    for pid in res.patch_ids:
        assert OFFICIAL_ID_RE.match(pid), pid
        p = PatchId.parse(pid)
        assert p.year in DOMAIN_YEARS[p.domain], f"{pid}: not a real domain-year"
        for m in MODALITY_NAMES:
            assert (root / p.relative_path(m)).is_file()
    assert not list(root.rglob(".*tmp*")), "temp files left behind"


def test_multi_year_domain_shares_one_historical_folder(make_toy_tree):
    # 6 domain-years -> 4 train domain-years, of which one multi-year domain gives two.
    root, res = make_toy_tree(patches=8, domains=6, rois_per_domain=1, t_s2=(2, 3), t_s1=(2, 3))
    years = defaultdict(set)
    for pid in res.patch_ids:
        p = PatchId.parse(pid)
        years[p.domain].add(p.year)
    multi = [d for d, ys in years.items() if len(ys) > 1]
    assert multi, f"no multi-year domain in {dict(years)}"
    for d in multi:
        hist = [f for f in root.iterdir() if f.name.startswith(f"{d}-") and f.name.endswith("AERIAL-RLT_PAN")]
        assert [f.name for f in hist] == [f"{d}-195X_AERIAL-RLT_PAN"]
        # Both years' patches are in that one folder, without name clashes.
        n_patches = sum(1 for pid in res.patch_ids if pid.startswith(f"{d}-"))
        assert len(list(hist[0].rglob("*.tif"))) == n_patches


# --------------------------------------------------------------------------------------------
# Rasters: size, dtype, CRS, footprint, grid
# --------------------------------------------------------------------------------------------
def test_sizes_dtypes_crs_and_shared_footprint(toy_tree):
    root, res = toy_tree
    for pid in res.patch_ids:
        bounds = set()
        for m in MODALITY_NAMES:
            mod = MODALITIES[m]
            with rasterio.open(res.path(pid, m)) as src:
                assert src.crs.to_epsg() == 2154, (pid, m)
                assert (src.height, src.width) == mod.shape_hw, (pid, m)
                assert src.dtypes[0] == mod.dtype, (pid, m, src.dtypes)
                t = src.transform
                assert (t.a, t.b, t.d, t.e) == (mod.gsd_m, 0.0, 0.0, -mod.gsd_m), (pid, m, t)
                bounds.add(tuple(round(v, 6) for v in src.bounds))
                if not mod.time_series:
                    assert src.count == mod.bands_per_date, (pid, m)
        assert len(bounds) == 1, f"{pid}: modalities disagree on the footprint {bounds}"
        left, bottom, right, top = bounds.pop()
        assert right - left == pytest.approx(PATCH_METERS) and top - bottom == pytest.approx(PATCH_METERS)
        assert 100_000 <= left <= 1_200_000 and 6_000_000 <= bottom <= 7_200_000


def test_roi_grid_is_contiguous(toy_tree):
    root, res = toy_tree
    by_roi = defaultdict(dict)
    for pid in res.patch_ids:
        p = PatchId.parse(pid)
        with rasterio.open(res.path(pid, "AERIAL_RGBI")) as src:
            by_roi[(p.domain_year, p.roi)][(p.row, p.col)] = (src.transform.c, src.transform.f)
    assert len(by_roi) == 4
    for roi, cells in by_roi.items():
        assert len(cells) >= 2
        (r0, c0), (x0, y0) = next(iter(cells.items()))
        ox, oy = x0 - (c0 - 1) * PATCH_METERS, y0 + (r0 - 1) * PATCH_METERS
        for (r, c), (x, y) in cells.items():  # row = north -> south, col = west -> east
            assert x == pytest.approx(ox + (c - 1) * PATCH_METERS, abs=1e-6), (roi, r, c)
            assert y == pytest.approx(oy - (r - 1) * PATCH_METERS, abs=1e-6), (roi, r, c)
        # 4-connected: a flood fill from one cell reaches them all.
        seen, todo = set(), [next(iter(cells))]
        while todo:
            r, c = todo.pop()
            if (r, c) in seen or (r, c) not in cells:
                continue
            seen.add((r, c))
            todo += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        assert seen == set(cells), f"{roi} is not contiguous"


def test_neighbouring_patches_continue_each_other(toy_tree):
    root, res = toy_tree
    ids = set(res.patch_ids)
    checked = 0
    for pid in res.patch_ids:
        p = PatchId.parse(pid)
        right = str(PatchId(p.domain, p.year, p.roi, p.row, p.col + 1))
        if right in ids:
            a = read(res.path(pid, "AERIAL_LABEL-COSIA"))[0]
            b = read(res.path(right, "AERIAL_LABEL-COSIA"))[0]
            # The label on both sides of the shared edge agrees almost everywhere.
            assert (a[:, -1] == b[:, 0]).mean() > 0.9
            checked += 1
    assert checked


# --------------------------------------------------------------------------------------------
# Time series and their dates
# --------------------------------------------------------------------------------------------
def test_band_counts_match_dates_gpkg(toy_tree):
    root, res = toy_tree
    dates = series_dates(root)
    for series in SENTINEL_DATES_FILES:
        assert set(dates[series]) == set(res.patch_ids), series
    by_roi = defaultdict(lambda: defaultdict(set))
    for pid in res.patch_ids:
        p = PatchId.parse(pid)
        for m in ("SENTINEL2_TS", "SENTINEL2_MSK-SC", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"):
            series = "SENTINEL2_TS" if m == "SENTINEL2_MSK-SC" else m
            d = dates[series][pid]
            assert 4 <= len(d) <= 9, (pid, series, len(d))
            assert d == sorted(d) and len(set(d)) == len(d), (pid, series)
            assert all(x[:4] == str(p.year) for x in d), (pid, series, d)
            with rasterio.open(res.path(pid, m)) as src:
                assert src.count == MODALITIES[m].bands_per_date * len(d), (pid, m, src.count, len(d))
            by_roi[(p.domain_year, p.roi)][series].add(tuple(d))
    for roi, per_series in by_roi.items():
        for series, variants in per_series.items():
            assert len(variants) == 1, f"{roi}: patches disagree on {series} dates"
    ts = {len(next(iter(v["SENTINEL2_TS"]))) for v in by_roi.values()}
    assert len(ts) > 1, "T should vary between ROIs"


def test_single_date_gpkgs(toy_tree):
    root, res = toy_tree
    for mod, fname in SINGLE_DATE_FILES.items():
        rows = gpkg_rows(root, fname)
        assert set(rows) == set(res.patch_ids), fname
        for pid, row in rows.items():
            date = row[SINGLE_DATE_COLUMN]
            assert isinstance(date, str) and re.fullmatch(r"\d{8}", date), (fname, date)
            year = int(date[:4])
            if mod == "AERIAL-RLT_PAN":
                assert 1947 <= year <= 1965
            else:
                assert abs(year - PatchId.parse(pid).year) <= 1


def test_mask_values_and_cloud_filter(toy_tree):
    root, res = toy_tree
    for pid in res.patch_ids:
        msk = read(res.path(pid, "SENTINEL2_MSK-SC"))
        assert msk.dtype == np.uint8 and msk.max() <= 100
        t = msk.shape[0] // 2
        per_date = msk.reshape(t, 2, *msk.shape[1:])  # [snow, cloud] per date
        clear = ((per_date[:, 1] <= REFERENCE_FILTER["max_cloud"])
                 & (per_date[:, 0] <= REFERENCE_FILTER["max_snow"])).mean(axis=(1, 2))
        keep = clear >= REFERENCE_FILTER["min_clear_share"]
        assert 0 < keep.sum() < t, f"{pid}: the cloud filter should drop some dates and keep others ({keep})"


def test_value_ranges_and_label_consistency(toy_tree):
    root, res = toy_tree
    cosia_seen = np.zeros(19, bool)
    for pid in res.patch_ids:
        cosia = read(res.path(pid, "AERIAL_LABEL-COSIA"))[0]
        assert cosia.max() <= 18
        cosia_seen[np.unique(cosia)] = True
        lpis = read(res.path(pid, "ALL_LABEL-LPIS"))
        assert lpis.shape[0] == 3 and lpis[0].max() <= 22 and lpis[1].max() <= 30 and lpis[2].max() <= 45
        # Hierarchy: level 3 determines level 2 which determines level 1.
        assert (L3_PARENT[lpis[2]] == lpis[1]).all() and (L2_PARENT[lpis[1]] == lpis[0]).all()
        farmed = np.isin(cosia, (8, 9, 10, 11, 12))  # herbaceous, crops, plowed, vineyard, orchards
        assert (lpis[0][~farmed] == 22).all(), f"{pid}: crop outside agricultural land"
        dem = read(res.path(pid, "DEM_ELEV"))
        assert (dem[0] >= dem[1]).all(), f"{pid}: DSM below DTM"
        assert np.isfinite(dem).all() and -100 < dem.min() and dem.max() < 4900
        for s1 in ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"):
            v = read(res.path(pid, s1))
            assert 0 < v.min() and v.max() <= 1.0 and 0.001 < np.median(v) < 0.5, (pid, s1)
        s2 = read(res.path(pid, "SENTINEL2_TS"))
        assert 0 < s2.min() and s2.max() <= 10000
        spot = read(res.path(pid, "SPOT_RGBI"))
        assert 100 < spot.mean() < 3000
    assert cosia_seen[:15].sum() >= 6, "too few land-cover classes in the toy tree"


# --------------------------------------------------------------------------------------------
# GeoPackages and CSVs
# --------------------------------------------------------------------------------------------
def test_gpkgs_crs_geometry_and_split(toy_tree):
    root, res = toy_tree
    assert sorted(f.name for f in (root / GLOBAL_MTD_FOLDER).iterdir()) == sorted(GLOBAL_MTD_FILES)
    for name in GLOBAL_MTD_FILES:
        info = pyogrio.read_info(root / GLOBAL_MTD_FOLDER / name)
        assert info["crs"] == "EPSG:2154" and info["geometry_type"] == "Polygon", name
        assert info["fields"][0] == "patch_id", name
    assert set(gpkg_rows(root, GEOM_FILE)) == set(res.patch_ids)
    split_rows = gpkg_rows(root, SPLIT_FILE)
    assert {pid: r["split_1"] for pid, r in split_rows.items()} == res.splits
    for pid, row in split_rows.items():
        with rasterio.open(res.path(pid, "DEM_ELEV")) as src:
            left, bottom, right, top = src.bounds
        geom = np.frombuffer(row["geometry"][13:], dtype="<f8").reshape(-1, 2)
        assert geom[:, 0].min() == pytest.approx(left) and geom[:, 0].max() == pytest.approx(right)
        assert geom[:, 1].min() == pytest.approx(bottom) and geom[:, 1].max() == pytest.approx(top)


def test_split_by_domain(toy_tree):
    root, res = toy_tree
    domains = defaultdict(set)
    for pid, split in res.splits.items():
        domains[split].add(PatchId.parse(pid).domain)
    assert domains["test"] and domains["train"] and domains["valid"]
    assert not domains["test"] & (domains["train"] | domains["valid"])
    assert domains["test"] <= set(OFFICIAL_TEST_DOMAINS)


def test_split_csvs(toy_tree):
    root, res = toy_tree
    official_header = OFFICIAL_CSVS[0].read_text().splitlines()[0]
    seen = {}
    for split, name in SPLIT_CSV_NAMES.items():
        path = root / name
        lines = path.read_text().splitlines()
        assert lines[0] == official_header
        for row in csv.DictReader(lines):
            seen[row["patch_id"]] = split
            for m in MODALITY_NAMES:
                cell = row[m]
                assert cell.startswith("../"), cell
                assert (root / cell[3:]).is_file(), cell
                assert parse_file_name(cell).modality == m
    assert seen == res.splits


# --------------------------------------------------------------------------------------------
# --from-csv
# --------------------------------------------------------------------------------------------
def test_from_official_csvs_reproduces_ids(make_toy_tree):
    root, res = make_toy_tree(from_csv=OFFICIAL_CSVS, csv_limit=5, t_s2=(2, 3), t_s1=(2, 3))
    expected = {}
    for path, split in zip(OFFICIAL_CSVS, ("train", "valid", "test")):
        ids = [r["patch_id"] for r in csv.DictReader(path.read_text().splitlines())][:5]
        expected.update(dict.fromkeys(ids, split))
    assert res.patch_ids == list(expected) and res.splits == expected
    for split, name in SPLIT_CSV_NAMES.items():
        ids = [r["patch_id"] for r in csv.DictReader((root / name).read_text().splitlines())]
        assert ids == [p for p, s in expected.items() if s == split]
        # The written CSV rows are exactly the official ones for the same patches.
        official = {l.split(",", 1)[0]: l for l in OFFICIAL_CSVS[list(SPLIT_CSV_NAMES).index(split)]
                    .read_text().splitlines()[1:]}
        for line in (root / name).read_text().splitlines()[1:]:
            assert line == official[line.split(",", 1)[0]]
    for pid in res.patch_ids:
        for m in MODALITY_NAMES:
            assert res.path(pid, m).is_file()


def test_from_csv_semicolon_and_empty_cells(tmp_path, make_toy_tree):
    header = ";".join(SPLIT_CSV_COLUMNS)
    pid = PatchId("D006", 2020, "FF-S1-14", 5, 5)
    cells = [pid.csv_path(m) if m not in ("SPOT_RGBI", "SENTINEL1-ASC_TS") else "" for m in SPLIT_CSV_COLUMNS[1:]]
    src = tmp_path / "my_valid_patches.csv"
    src.write_text(f"{header}\n{pid};{';'.join(cells)}\n")
    root, res = make_toy_tree(from_csv=[src], t_s2=(2, 3), t_s1=(2, 3))
    assert res.splits == {str(pid): "valid"}
    assert not res.path(str(pid), "SPOT_RGBI").exists() and res.path(str(pid), "DEM_ELEV").exists()
    assert str(pid) not in gpkg_rows(root, SENTINEL_DATES_FILES["SENTINEL1-ASC_TS"])


@pytest.mark.parametrize("name, body, message", [
    ("patches.csv", "patch_id\nD006-2020_FF-S1-14_5-5\n", "cannot tell the split"),
    ("train.csv", "id,x\n1,2\n", "no 'patch_id' column"),
    ("train.csv", "patch_id\nD006_bad\n", "not a FLAIR-HUB patch id"),
])
def test_from_csv_errors_name_the_file(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as info:
        generate(tmp_path / "out", ToyConfig(from_csv=[path], t_s2=(2, 3), t_s1=(2, 3)))
    assert name in str(info.value)


def test_from_csv_rejects_a_patch_in_two_csvs(tmp_path):
    a, b = tmp_path / "train.csv", tmp_path / "test.csv"
    for p in (a, b):
        p.write_text("patch_id\nD006-2020_FF-S1-14_5-5\n")
    with pytest.raises(ValueError, match="also in"):
        generate(tmp_path / "out", ToyConfig(from_csv=[a, b], t_s2=(2, 3), t_s1=(2, 3)))


# --------------------------------------------------------------------------------------------
# Missing modalities
# --------------------------------------------------------------------------------------------
def test_missing_fraction(toy_tree_missing):
    root, res = toy_tree_missing
    lacking = {pid: set(MODALITY_NAMES) - set(mods) for pid, mods in res.modalities.items() if len(mods) < 10}
    assert len(lacking) == round(0.5 * len(res.patch_ids))
    optional = {"AERIAL-RLT_PAN", "SPOT_RGBI", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS", "SENTINEL2_TS", "SENTINEL2_MSK-SC"}
    csv_rows = {}
    for name in SPLIT_CSV_NAMES.values():
        csv_rows.update({r["patch_id"]: r for r in csv.DictReader((root / name).read_text().splitlines())})
    dates = series_dates(root)
    for pid in res.patch_ids:
        gone = lacking.get(pid, set())
        assert gone <= optional
        assert ("SENTINEL2_TS" in gone) == ("SENTINEL2_MSK-SC" in gone)
        for m in MODALITY_NAMES:
            assert res.path(pid, m).exists() == (m not in gone), (pid, m)
            assert (csv_rows[pid][m] == "") == (m in gone), (pid, m)
        for series in SENTINEL_DATES_FILES:
            assert (pid in dates[series]) == (series not in gone), (pid, series)
        for mod, fname in SINGLE_DATE_FILES.items():
            assert (pid in gpkg_rows(root, fname)) == (mod not in gone), (pid, fname)
    assert len(tif_files(root)) == sum(len(m) for m in res.modalities.values())


# --------------------------------------------------------------------------------------------
# Determinism, CLI, config validation
# --------------------------------------------------------------------------------------------
def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_tree(make_toy_tree):
    # GeoPackages carry a last-change timestamp; the writer pins it (OGR_CURRENT_DATE), so even
    # the .gpkg files compare byte for byte. One run uses two worker processes.
    cfg = dict(patches=6, domains=2, rois_per_domain=1, t_s2=(2, 4), t_s1=(2, 4), missing_fraction=0.3)
    a = _tree_bytes(make_toy_tree(seed=5, workers=1, **cfg).root)
    b = _tree_bytes(make_toy_tree(seed=5, workers=2, **cfg).root)
    assert a.keys() == b.keys() and any(k.endswith(".gpkg") for k in a)
    assert [k for k in a if a[k] != b[k]] == []
    c = _tree_bytes(make_toy_tree(seed=6, workers=1, **cfg).root)
    assert a != c


def test_cli_smoke(tmp_path, capsys):
    out = tmp_path / "toy"
    rc = main(["--out", str(out), "--patches", "4", "--domains", "2", "--rois-per-domain", "1", "--seed", "3",
               "--t-s2", "2", "3", "--t-s1", "2", "3", "--missing-fraction", "0.25", "--workers", "1"])
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("flair-toy: 4 patches") and str(out) in summary
    assert len(tif_files(out)) < 40 and (out / SPLIT_CSV_NAMES["train"]).is_file()
    # A second run into the same (non-empty) folder is refused with a readable error.
    assert main(["--out", str(out), "--patches", "4"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="patchez"):
        ToyConfig.from_dict({"patchez": 3})
    with pytest.raises(ValueError, match="t_s2"):
        ToyConfig(t_s2=(5,))
    with pytest.raises(ValueError, match="SENTINEL2_TS"):
        generate(tmp_path / "a", ToyConfig(t_s2=(9, 4)))
    with pytest.raises(ValueError, match="missing_fraction"):
        generate(tmp_path / "b", ToyConfig(patches=2, missing_fraction=1.5, t_s2=(2, 2), t_s1=(2, 2)))


# --------------------------------------------------------------------------------------------
# Learnability
# --------------------------------------------------------------------------------------------
def _nearest_mean_accuracy(train_x, train_y, test_x, test_y) -> tuple[float, float]:
    classes = np.unique(train_y)
    means = np.stack([train_x[train_y == c].mean(0) for c in classes])
    pred = classes[np.argmin(((test_x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    # Chance = always answering the test set's own most frequent class (a generous baseline).
    return float((pred == test_y).mean()), float(np.bincount(test_y).max() / test_y.size)


def test_aerial_predicts_land_cover_across_domains(toy_tree):
    """A per-pixel nearest-class-mean on aerial RGBI, fitted on train, beats chance on test."""
    root, res = toy_tree
    rng = np.random.default_rng(0)

    def pixels(split):
        xs, ys = [], []
        for pid in res.ids_of(split):
            x = read(res.path(pid, "AERIAL_RGBI")).reshape(4, -1).T.astype(np.float32)
            y = read(res.path(pid, "AERIAL_LABEL-COSIA")).ravel()
            pick = rng.choice(y.size, 4000, replace=False)
            xs.append(x[pick]), ys.append(y[pick])
        return np.concatenate(xs), np.concatenate(ys)

    acc, chance = _nearest_mean_accuracy(*pixels("train"), *pixels("test"))
    assert acc > chance + 0.2, (acc, chance)


def _eta_squared(labels: np.ndarray, values: np.ndarray) -> float:
    """Share of the variance explained by the class (correlation ratio): ~0 for label-free noise."""
    total = ((values - values.mean()) ** 2).sum()
    between = sum((labels == c).sum() * (values[labels == c].mean() - values.mean()) ** 2 for c in np.unique(labels))
    return float(between / total)


def test_every_modality_separates_classes(toy_tree):
    """The land-cover class explains most of the variance of each input modality at its own
    resolution (label-free noise would give eta^2 near 0.1 here)."""
    root, res = toy_tree
    feats = defaultdict(list)
    for pid in res.patch_ids:
        cosia = read(res.path(pid, "AERIAL_LABEL-COSIA"))[0]
        dem = read(res.path(pid, "DEM_ELEV"))
        pan = read(res.path(pid, "AERIAL-RLT_PAN"))[0]
        spot = read(res.path(pid, "SPOT_RGBI"))
        s2 = read(res.path(pid, "SENTINEL2_TS")).astype(np.float32)
        msk = read(res.path(pid, "SENTINEL2_MSK-SC"))
        s1 = read(res.path(pid, "SENTINEL1-ASC_TS"))
        # Coarse labels: majority class of each 10 m pixel (a 500x500 crop in 50x50 blocks is close enough).
        coarse = np.array([[np.bincount(b.ravel(), minlength=19).argmax() for b in np.split(r, 10, axis=1)]
                           for r in np.split(cosia[:500, :500], 10, axis=0)])
        clear = (msk.reshape(-1, 2, 10, 10).max(axis=(1, 2, 3)) <= 1)  # dates with no cloud/snow at all
        feats["DEM_ELEV (DSM-DTM)"].append((cosia.ravel(), (dem[0] - dem[1]).ravel()))
        feats["AERIAL-RLT_PAN"].append((cosia[::2, ::2].ravel(), pan.ravel().astype(np.float32)))
        feats["SPOT_RGBI NIR"].append((cosia[::8, ::8].ravel(), spot[3].ravel().astype(np.float32)))
        feats["SENTINEL2_TS B08, clear dates"].append(
            (coarse.ravel(), s2.reshape(-1, 10, 10, 10)[clear, 6].mean(0).ravel()))
        feats["SENTINEL1-ASC_TS VV (log)"].append((coarse.ravel(), np.log10(s1[0::2].mean(0)).ravel()))
    for name, parts in feats.items():
        labels = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
        assert _eta_squared(labels, values) > 0.3, name



def test_zips_hold_the_tree_in_the_hubs_layout(tmp_path):
    """`--zips`: data/<folder>.zip per modality folder plus GLOBAL_ALL_MTD.zip, members = the tree's
    files byte for byte, split CSVs at the top, no folder left; the same seed gives identical zips."""
    import zipfile

    from tools.flair_toy import ToyConfig, generate

    cfg = dict(patches=4, domains=2, rois_per_domain=1, t_s2=(3, 4), t_s1=(3, 4), workers=1)
    tree = generate(tmp_path / "tree", ToyConfig(**cfg))
    hub = generate(tmp_path / "hub", ToyConfig(**cfg, zips=True))
    again = generate(tmp_path / "again", ToyConfig(**cfg, zips=True, zip_compression="store"))
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == sorted(["data", *(p.name for p in hub.csv_files.values())])
    folders = sorted(p.name for p in tree.out_dir.iterdir() if p.is_dir())
    assert [z.name for z in hub.zip_files] == [f"{f}.zip" for f in folders]
    assert all(z.parent == tmp_path / "hub" / "data" for z in hub.zip_files)
    for z in hub.zip_files:
        with zipfile.ZipFile(z) as zf:
            assert zf.testzip() is None
            files = [i for i in zf.infolist() if not i.is_dir()]
            assert files and all(i.compress_type == zipfile.ZIP_DEFLATED for i in files)
            for i in files:
                assert zf.read(i) == (tree.out_dir / i.filename).read_bytes(), i.filename
    for name, path in tree.csv_files.items():
        assert hub.csv_files[name].read_bytes() == path.read_bytes()
    with zipfile.ZipFile(again.zip_files[0]) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    twice = generate(tmp_path / "hub2", ToyConfig(**cfg, zips=True))
    assert [z.read_bytes() for z in twice.zip_files] == [z.read_bytes() for z in hub.zip_files]


def test_cli_zips_with_a_zonal_area(tmp_path, capsys):
    from tools.flair_toy import main
    from tools.toy_zonal import load_zonal_area

    out, area = tmp_path / "hub", tmp_path / "area"
    assert main(["--out", str(out), "--zips", "--zip-compression", "store", "--patches", "4", "--domains", "1",
                 "--rois-per-domain", "1", "--t-s2", "3", "4", "--t-s1", "3", "4", "--workers", "1",
                 "--zonal", str(area)]) == 0
    assert "11 zips + 3 CSVs" in capsys.readouterr().out  # one domain: 10 modality zips + GLOBAL_ALL_MTD
    assert len(list((out / "data").glob("*.zip"))) == 11 and not [p for p in out.iterdir() if p.name.startswith(".")]
    loaded = load_zonal_area(area)
    assert loaded.rasters and all(p.is_file() for p in loaded.rasters.values())
def test_compressed_tiled_tree_is_what_gdal_reports(make_toy_tree):
    """`compress` + `tiled`: the layout of real-world GeoTIFFs that the format benchmark packs;
    the arrays are the same as in a plain tree of the same seed."""
    import rasterio

    tiled = make_toy_tree(patches=2, domains=1, rois_per_domain=1, t_s2=(2, 2), t_s1=(2, 2), compress="deflate",
                          tiled=True)
    plain = make_toy_tree(patches=2, domains=1, rois_per_domain=1, t_s2=(2, 2), t_s1=(2, 2))
    pid = tiled.result.patch_ids[0]
    for mod, want_tiled in (("AERIAL_RGBI", True), ("DEM_ELEV", True), ("SENTINEL2_TS", False)):
        with rasterio.open(tiled.result.path(pid, mod)) as f, rasterio.open(plain.result.path(pid, mod)) as g:
            assert f.profile["compress"] == "deflate"
            assert f.profile["tiled"] is want_tiled
            if want_tiled:
                assert f.block_shapes[0] == (256, 256)
            assert (f.read() == g.read()).all()
