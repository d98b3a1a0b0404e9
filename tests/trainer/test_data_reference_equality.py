"""The loader's tensors equal those of a straightforward per-file implementation of the reference.

The oracle below reads the *source tree* (one GeoTIFF per modality, with rasterio, and the dates
GeoPackages with pyogrio) and applies the FLAIR-HUB reference semantics sample by sample, the way
`flair_dataset.__getitem__` does (float64 normalisation, pandas-based temporal averaging, one-hot
labels, float32 tensors). The loader reads the packed shards and preprocesses batched. For each
config, every sample of the split must match bit for bit (labels compared as one-hot planes).
"""

from __future__ import annotations

import copy
import datetime
import json

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch

from packer.schema import GLOBAL_MTD_FOLDER, SENTINEL_DATES_FILES, PatchId
from trainer.config import validate_config
from trainer.data import StreamingLoader, dates_key, pad_mask_key
from trainer.data import preprocess as pp
from trainer.data.sample import sample_seed

# --------------------------------------------------------------------------------------------
# The oracle: the reference's per-sample semantics, written plainly
# --------------------------------------------------------------------------------------------


def o_read(path, channels=None):
    with rasterio.open(path) as src:
        return src.read(channels) if channels else src.read()


def o_norm(img, norm_type, means, stds):
    if norm_type == "custom":
        img = img.astype(np.float64)
        for i in range(img.shape[0]):
            img[i] -= means[i]
            img[i] /= stds[i]
        return img
    if norm_type == "scaling":  # skimage.img_as_float
        if img.dtype.kind == "u":
            return np.multiply(img, 1.0 / np.iinfo(img.dtype).max, dtype=np.float64)
        return img
    return img


def o_dates(root, series, ref_date):
    path = root / GLOBAL_MTD_FOLDER / SENTINEL_DATES_FILES[series]
    _, table = pyogrio.read_arrow(path, columns=["patch_id", "acquisition_dates"], read_geometry=False)
    ref_m, ref_d = map(int, ref_date.split("-"))
    out = {}
    for pid, text in zip(table.column("patch_id").to_pylist(), table.column("acquisition_dates").to_pylist()):
        dates, diffs = [], []
        for s in json.loads(text).values():
            d = datetime.datetime.strptime(s, "%Y%m%d")
            dates.append(d)
            diffs.append((d - datetime.datetime(d.year, ref_m, ref_d)).days)
        out[pid] = (np.array(dates), np.array(diffs))
    return out


def o_filter(msk, max_cloud, max_snow, frac):
    ok = (msk[:, 1] <= max_cloud) & (msk[:, 0] <= max_snow)
    thr = (1 - frac) * msk.shape[2] * msk.shape[3]
    keep = ok.sum(axis=(1, 2)) >= thr
    if not keep.any():
        keep = (msk[:, 0] <= max_snow).sum(axis=(1, 2)) >= thr
    return keep


def o_average(data, dates, period, ref_date):
    ref_m, ref_d = map(int, ref_date.split("-"))
    ref = datetime.datetime(dates[0].year, ref_m, ref_d)
    df = pd.DataFrame({"dates": dates})
    df["month"] = df["dates"].dt.month
    values, diffs, last = [], [], None
    periods = []
    for month in range(1, 13):
        if period == "monthly":
            periods.append((df[df["month"] == month].index, datetime.datetime(ref.year, month, 15)))
        else:
            end = (datetime.datetime(ref.year + (month == 12), month % 12 + 1, 1) - datetime.timedelta(days=1))
            halves = [(datetime.datetime(ref.year, month, 1), datetime.datetime(ref.year, month, 15), 8),
                      (datetime.datetime(ref.year, month, 16), end, 23)]
            for lo, hi, mid in halves:
                periods.append((df[(df["dates"] >= lo) & (df["dates"] <= hi)].index, datetime.datetime(ref.year, month, mid)))
    for idx, mid in periods:
        if len(idx) > 0:
            last = np.mean(data[idx], axis=0)
            values.append(last)
            diffs.append((mid - ref).days)
        else:
            values.append(last if last is not None else np.zeros_like(data[0]))
            diffs.append(diffs[-1] if diffs else 0)
    return np.array(values), np.array(diffs)


def o_transform(arr, draws):
    """The reference's augmentation loop: every 2-D plane flipped/rotated the same way."""
    hflip, vflip, k = draws
    shape = arr.shape
    planes = arr.reshape(-1, *shape[-2:]).copy()
    for i in range(planes.shape[0]):
        p = planes[i]
        if hflip:
            p = np.flip(p, axis=-1)
        if vflip:
            p = np.flip(p, axis=-2)
        if k:
            p = np.rot90(p, k=k, axes=(-2, -1))
        planes[i] = p
    return planes.reshape(shape)


def oracle_sample(root, pid, cfg, dates, draws=None):
    """One sample as the reference returns it (float32 tensors, one-hot float labels)."""
    mods, pre, norm = cfg["modalities"], cfg["modalities"]["pre_processings"], cfg["modalities"]["normalization"]
    ref_date = cfg["models"]["multitemp_model"]["ref_date"]
    p = PatchId.parse(pid)
    path = lambda m: root / p.relative_path(m)  # noqa: E731
    chans = lambda m: mods["inputs_channels"].get(m, [])  # noqa: E731
    stats = lambda m: (norm.get(f"{m}_means", []), norm.get(f"{m}_stds", []))  # noqa: E731
    out = {}
    on = [m for m, v in mods["inputs"].items() if v]
    for m in ("AERIAL_RGBI", "AERIAL-RLT_PAN", "SPOT_RGBI"):
        if m in on:
            out[m] = o_norm(o_read(path(m), chans(m)), norm["norm_type"], *stats(m))
    if "DEM_ELEV" in on:
        z = o_read(path("DEM_ELEV"))
        if pre["calc_elevation"]:
            e = (z[0] - z[1])[np.newaxis]
            z = np.stack((z[0], e[0])) if pre["calc_elevation_stack_dsm"] else e
        out["DEM_ELEV"] = o_norm(z, norm["norm_type"], *stats("DEM_ELEV"))
    for m, size in (("SENTINEL2_TS", 10), ("SENTINEL1-ASC_TS", 2), ("SENTINEL1-DESC_TS", 2)):
        if m not in on:
            continue
        a = o_read(path(m))
        a = a.reshape(a.shape[0] // size, size, *a.shape[1:])[:, [c - 1 for c in chans(m)]]
        d, diff = dates[m][pid]
        if m == "SENTINEL2_TS" and pre["filter_sentinel2"]:
            k = o_read(path("SENTINEL2_MSK-SC"))
            keep = np.where(o_filter(k.reshape(-1, 2, *k.shape[1:]), pre["filter_sentinel2_max_cloud"],
                                     pre["filter_sentinel2_max_snow"], pre["filter_sentinel2_max_frac_cover"]))[0]
            a, d, diff = a[keep], d[keep], diff[keep]
        period = pre["temporal_average_sentinel2" if m == "SENTINEL2_TS" else "temporal_average_sentinel1"]
        if period:
            a, diff = o_average(a, d, period, ref_date)
        out[m] = a
        out[m.replace("_TS", "_DATES")] = diff
    for task in cfg["labels"]:
        conf = cfg["labels_configs"][task]
        lab = o_read(path(task), [conf.get("label_channel_nomenclature", 1)])[0]
        out[task] = np.stack([lab == i for i in range(len(conf["value_name"]))])
    if draws is not None:
        for key in on + list(cfg["labels"]):
            out[key] = o_transform(out[key], draws)
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Configs under test
# --------------------------------------------------------------------------------------------
BASE = {
    "modalities": {
        "inputs": {m: False for m in ("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS",
                                      "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")},
        "inputs_channels": {"AERIAL_RGBI": [4, 1, 2], "SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": list(range(1, 11)),
                            "SENTINEL1-ASC_TS": [1, 2], "SENTINEL1-DESC_TS": [1, 2]},
        "pre_processings": {"filter_sentinel2": True, "filter_sentinel2_max_cloud": 1, "filter_sentinel2_max_snow": 1,
                            "filter_sentinel2_max_frac_cover": 0.05, "temporal_average_sentinel2": False,
                            "temporal_average_sentinel1": False, "calc_elevation": True,
                            "calc_elevation_stack_dsm": True, "use_augmentation": False},
        "normalization": {"norm_type": "custom",
                          "AERIAL_RGBI_means": [106.59, 105.66, 111.35], "AERIAL_RGBI_stds": [39.78, 52.23, 45.62],
                          "AERIAL-RLT_PAN_means": [125.92], "AERIAL-RLT_PAN_stds": [38.45],
                          "SPOT_RGBI_means": [433.26, 508.75, 467.77, 1137.03],
                          "SPOT_RGBI_stds": [312.76, 284.61, 226.02, 543.11],
                          "DEM_ELEV_means": [311.06, 311.06], "DEM_ELEV_stds": [537.55, 537.55]},
    },
    "models": {"multitemp_model": {"ref_date": "05-15"}},
    "hyperparams": {"batch_size": 4, "seed": 7},
    "labels": ["AERIAL_LABEL-COSIA"],
    "labels_configs": {
        "AERIAL_LABEL-COSIA": {"value_name": {i: f"c{i}" for i in range(19)}},
        "ALL_LABEL-LPIS": {"label_channel_nomenclature": 1, "value_name": {i: f"l{i}" for i in range(23)}},
    },
}
ALL = ["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"]


def make_cfg(inputs, **pre):
    cfg = copy.deepcopy(BASE)
    if len(inputs) > 1 or pre.get("lpis_channel"):
        cfg["labels"].append("ALL_LABEL-LPIS")  # multi-task where it matters; one task elsewhere keeps this fast
    for m in inputs:
        cfg["modalities"]["inputs"][m] = True
    norm_type = pre.pop("norm_type", None)
    if norm_type:
        cfg["modalities"]["normalization"]["norm_type"] = norm_type
    lpis_channel = pre.pop("lpis_channel", None)
    if lpis_channel:
        n = (23, 31, 46)[lpis_channel - 1]
        cfg["labels_configs"]["ALL_LABEL-LPIS"] = {"label_channel_nomenclature": lpis_channel,
                                                   "value_name": {i: f"l{i}" for i in range(n)}}
    cfg["modalities"]["pre_processings"].update(pre)
    return validate_config(cfg)


CASES = {
    **{f"only_{m}": ([m], {}) for m in ALL},
    "all_filter_off_monthly": (ALL, dict(filter_sentinel2=False, temporal_average_sentinel2="monthly",
                                         temporal_average_sentinel1="monthly")),
    "all_semi_monthly": (ALL, dict(temporal_average_sentinel2="semi-monthly", temporal_average_sentinel1="semi-monthly")),
    "s2_strict_filter_monthly": (["SENTINEL2_TS"], dict(filter_sentinel2_max_cloud=0, filter_sentinel2_max_frac_cover=0.0,
                                                         temporal_average_sentinel2="monthly")),
    "dem_raw": (["DEM_ELEV"], dict(calc_elevation=False)),
    "dem_height_only": (["DEM_ELEV"], dict(calc_elevation=True, calc_elevation_stack_dsm=False)),
    "scaling": (["AERIAL_RGBI", "SPOT_RGBI", "DEM_ELEV", "AERIAL-RLT_PAN"], dict(norm_type="scaling")),
    "without": (["AERIAL_RGBI", "SPOT_RGBI", "DEM_ELEV"], dict(norm_type="without")),
    "lpis_level3": (["SPOT_RGBI"], dict(lpis_channel=3)),
}


@pytest.fixture(scope="module")
def oracle_dates(toy_shards):
    root = toy_shards.tree.root
    return {m: o_dates(root, m, "05-15") for m in SENTINEL_DATES_FILES}


def assert_batch_matches(inputs, batch, cfg, root, dates, augmented=False, seed=7, epoch=0):
    for i, pid in enumerate(batch["patch_id"]):
        draws = pp.augmentation_draws(sample_seed(seed, epoch, pid)) if augmented else None
        ref = oracle_sample(root, pid, cfg, dates, draws)
        for key, want in ref.items():
            if key in cfg["labels"]:
                # One-hot planes equal ours iff every pixel has exactly one hot plane, at our class.
                assert inputs[key].dtype == torch.int64
                assert torch.equal(want.sum(0), torch.ones_like(want[0])), f"{pid} {key}: class outside the table"
                assert torch.equal(want.argmax(0), inputs[key][i]), f"{pid} {key}: class maps differ"
                continue
            if key.endswith("_DATES"):
                series = key.replace("_DATES", "_TS")
                n = ref[series].shape[0]
                got = inputs[dates_key(series)][i, :n]
            elif key in ("SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"):
                n = want.shape[0]
                got = inputs[key][i, :n]
                assert (inputs[key][i, n:] == 0).all(), f"{pid} {key}: padding is not zero"
                # The mask: past the length, or a date holding only pad_value (the reference U-TAE's rule).
                mask = inputs[pad_mask_key(key)][i]
                assert mask[n:].all() and torch.equal(mask[:n], (want == 0).flatten(1).all(dim=1)), f"{pid} {key}: mask"
            else:
                got = inputs[key][i]
            assert got.dtype == want.dtype and got.shape == want.shape, f"{pid} {key}: {got.shape} vs {want.shape}"
            assert torch.equal(got, want), f"{pid} {key}: values differ (max |d| {(got - want).abs().max()})"


@pytest.mark.parametrize("case", list(CASES))
def test_loader_equals_reference(case, toy_shards, oracle_dates):
    inputs_on, pre = CASES[case]
    cfg = make_cfg(inputs_on, **pre)
    loader = StreamingLoader.from_config(cfg, "train", source=str(toy_shards.out), rank=0, world_size=1,
                                         num_workers=0, batch_size=2, shuffle=False)
    seen = []
    for batch in loader:
        inputs = loader.to_model_inputs(batch)
        assert_batch_matches(inputs, batch, cfg, toy_shards.tree.root, oracle_dates)
        seen += [p for p, v in zip(batch["patch_id"], batch["valid"]) if v]
    assert sorted(seen) == sorted(toy_shards.tree.result.ids_of("train"))


def test_augmentation_equals_reference_transform(toy_shards, oracle_dates):
    """Same draws -> same arrays as the reference's per-plane loop, for every modality and label."""
    cfg = make_cfg(ALL, use_augmentation=True, temporal_average_sentinel1="monthly")
    loader = StreamingLoader.from_config(cfg, "train", source=str(toy_shards.out), rank=0, world_size=1,
                                         num_workers=0, batch_size=3, shuffle=False)
    draws_seen = set()
    for batch in loader:
        inputs = loader.to_model_inputs(batch)
        assert_batch_matches(inputs, batch, cfg, toy_shards.tree.root, oracle_dates, augmented=True)
        draws_seen |= {tuple(map(int, d)) for d in batch["augment"]}
    assert len(draws_seen) > 1, "augmentation draws never vary"


def test_augmentation_draws_are_deterministic_and_shared():
    a = pp.augmentation_draws(sample_seed(1, 2, "D006-2020_FF-S1-14_5-5"))
    b = pp.augmentation_draws(sample_seed(1, 2, "D006-2020_FF-S1-14_5-5"))
    assert a == b
    draws = {pp.augmentation_draws(sample_seed(1, e, "D006-2020_FF-S1-14_5-5")) for e in range(40)}
    assert len(draws) > 4  # epochs change the draws
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    for d in [(True, False, 0), (False, True, 1), (True, True, 3), (False, False, 2)]:
        assert np.array_equal(pp.augment(x, d), o_transform(x, d))
        assert np.array_equal(pp.augment(x[0, 0], d), o_transform(x[0, 0], d))


def test_sentinel2_filter_snow_only_fallback():
    rng = np.random.default_rng(0)
    mask = np.zeros((5, 2, 10, 10), dtype=np.uint8)
    mask[:, 1] = 50  # every date cloudy: the clear test keeps nothing
    mask[2, 0] = 80  # one date snowy too
    keep = pp.filter_sentinel2_dates(mask, 1, 1, 0.05)
    assert keep.tolist() == [True, True, False, True, True]
    assert np.array_equal(keep, o_filter(mask, 1, 1, 0.05))
    for _ in range(20):
        m = rng.integers(0, 4, size=(7, 2, 10, 10)).astype(np.uint8)
        for args in [(1, 1, 0.05), (2, 3, 0.5), (0, 0, 0.0)]:
            assert np.array_equal(pp.filter_sentinel2_dates(m, *args), o_filter(m, *args))


@pytest.mark.parametrize("period", ["monthly", "semi-monthly"])
def test_temporal_average_edge_cases(period):
    """Dates across New Year, empty leading months, several per period, float32 and uint16 input."""
    rng = np.random.default_rng(1)
    days = ["20210103", "20210110", "20210116", "20210420", "20210421", "20210930", "20211231", "20220105"]
    dates = pp.parse_dates(days)
    for dtype in (np.uint16, np.float32):
        data = (rng.random((len(days), 3, 4, 4)) * 5000).astype(dtype)
        got, got_off = pp.temporal_average(data, dates, period, "05-15")
        want, want_off = o_average(data, np.array([datetime.datetime(d.year, d.month, d.day) for d in dates]), period, "05-15")
        assert np.array_equal(got.astype(np.float32), want.astype(np.float32))
        assert np.array_equal(got_off, want_off)
        late, late_off = pp.temporal_average(data[3:7], dates[3:7], period, "05-15")  # Jan-Mar empty -> zeros
        assert (late[0] == 0).all() and late_off[0] == 0
        want, want_off = o_average(data[3:7], np.array([datetime.datetime(d.year, d.month, d.day) for d in dates[3:7]]),
                                   period, "05-15")
        assert np.array_equal(late.astype(np.float32), want.astype(np.float32)) and np.array_equal(late_off, want_off)
