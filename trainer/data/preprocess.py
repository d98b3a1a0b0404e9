"""The FLAIR-HUB reference preprocessing, one named function per config option.

Each function reproduces the semantics of the reference loader (`IGNF/FLAIR-HUB`,
`src/flair_hub/data/`) for the option named in its docstring, quirks included, so that our tensors
equal the reference's value for value. They work on one sample's numpy arrays in their stored
dtype; the float64 normalisation that the reference runs per sample is done batched later
(`trainer.data.normalize`), which gives the same float32 values at a fraction of the cost.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np


# --------------------------------------------------------------------------------------------
# Channels and series layout
# --------------------------------------------------------------------------------------------
def select_channels(arr: np.ndarray, channels: Sequence[int] | None) -> np.ndarray:
    """`modalities.inputs_channels.<MOD>` for a mono-temporal image: 1-based band numbers.

    None (or an empty list) keeps every band, as the reference's `read_patch(path, [])` does.
    """
    if not channels:
        return arr
    return arr[[c - 1 for c in channels]]


def split_dates(arr: np.ndarray, bands_per_date: int) -> np.ndarray:
    """Date-major `(T*C, H, W)` file layout -> `(T, C, H, W)` (the reference's `reshape_sentinel`)."""
    if arr.shape[0] % bands_per_date:
        raise ValueError(f"{arr.shape[0]} bands is not a multiple of {bands_per_date} bands per date")
    return arr.reshape(arr.shape[0] // bands_per_date, bands_per_date, *arr.shape[1:])


def select_series_channels(series: np.ndarray, channels: Sequence[int] | None) -> np.ndarray:
    """`modalities.inputs_channels.<SERIES>`: 1-based bands kept at every date of a `(T,C,H,W)` series."""
    if not channels:
        return series[:, list(range(series.shape[1]))]  # the reference always fancy-indexes (a copy)
    return series[:, [c - 1 for c in channels]]


# --------------------------------------------------------------------------------------------
# Elevation
# --------------------------------------------------------------------------------------------
def calc_elevation(dem: np.ndarray, stack_dsm: bool) -> np.ndarray:
    """`pre_processings.calc_elevation` (+ `calc_elevation_stack_dsm`): DSM - DTM height above ground.

    `dem` is the stored `(2, H, W)` float32 [DSM, DTM]. Returns `(1, H, W)` [DSM-DTM], or
    `(2, H, W)` [DSM, DSM-DTM] when stacking; the subtraction stays in the stored dtype.
    """
    # One output array, the subtraction written straight into it: no temporary, no stacking copy.
    out = np.empty((2 if stack_dsm else 1, *dem.shape[1:]), dtype=dem.dtype)
    if stack_dsm:
        out[0] = dem[0]
    np.subtract(dem[0], dem[1], out=out[-1])
    return out


# --------------------------------------------------------------------------------------------
# Sentinel-2 cloud / snow filtering
# --------------------------------------------------------------------------------------------
def filter_sentinel2_dates(
    mask: np.ndarray, max_cloud: float = 1, max_snow: float = 1, max_frac_cover: float = 0.05
) -> np.ndarray:
    """`pre_processings.filter_sentinel2` (+ `_max_cloud`, `_max_snow`, `_max_frac_cover`).

    `mask` is the `(T, 2, H, W)` SENTINEL2_MSK-SC series, channel 0 snow and 1 cloud (0-100).
    A date is kept when at least `(1 - max_frac_cover)` of its pixels have cloud <= max_cloud and
    snow <= max_snow. When no date passes, the reference falls back to the snow test alone (so a
    cloudy-only year still yields dates); that fallback may itself keep nothing.
    Returns a boolean `(T,)` keep-mask.
    """
    n_pix = mask.shape[2] * mask.shape[3]
    needed = (1 - max_frac_cover) * n_pix
    snow_ok = mask[:, 0] <= max_snow
    clear = (mask[:, 1] <= max_cloud) & snow_ok
    keep = clear.sum(axis=(1, 2)) >= needed
    if not keep.any():
        keep = snow_ok.sum(axis=(1, 2)) >= needed
    return keep


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------
def parse_dates(values: Sequence[str]) -> list[dt.date]:
    """`YYYYMMDD` strings (band order) -> dates."""
    return [dt.date(int(s[:4]), int(s[4:6]), int(s[6:8])) for s in values]


def _ref(year: int, ref_date: str) -> dt.date:
    month, day = map(int, ref_date.split("-"))
    return dt.date(year, month, day)


def date_offsets(dates: Sequence[dt.date], ref_date: str) -> np.ndarray:
    """`models.multitemp_model.ref_date`: days from each acquisition to `ref_date` of *its own* year.

    The reference computes the offset per acquisition year (so a series straddling New Year
    restarts near -135), not against one fixed date; we keep that.
    """
    return np.array([(d - _ref(d.year, ref_date)).days for d in dates], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Temporal averaging
# --------------------------------------------------------------------------------------------
def _fill_periods(series: np.ndarray, groups: list[np.ndarray], mids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean per period; an empty period repeats the previous one (zeros / offset 0 before any)."""
    values, offsets = [], []
    last = None
    for idx, mid in zip(groups, mids):
        if len(idx):
            last = np.mean(series[idx], axis=0)
            values.append(last)
            offsets.append(mid)
        else:
            values.append(last if last is not None else np.zeros_like(series[0]))
            offsets.append(offsets[-1] if offsets else 0)
    return np.array(values), np.array(offsets, dtype=np.int64)


def temporal_average_monthly(series: np.ndarray, dates: Sequence[dt.date], ref_date: str) -> tuple[np.ndarray, np.ndarray]:
    """`temporal_average_sentinel2/1: monthly`: 12 monthly means, offsets of the 15th to `ref_date`.

    Months are matched on the calendar month only (any year); the offsets use the year of the
    first acquisition, as in the reference.
    """
    if len(dates) == 0:
        return _empty_average(series, 12)
    ref = _ref(dates[0].year, ref_date)
    months = np.array([d.month for d in dates])
    groups = [np.flatnonzero(months == m) for m in range(1, 13)]
    mids = [(dt.date(ref.year, m, 15) - ref).days for m in range(1, 13)]
    return _fill_periods(series, groups, mids)


def temporal_average_semi_monthly(
    series: np.ndarray, dates: Sequence[dt.date], ref_date: str
) -> tuple[np.ndarray, np.ndarray]:
    """`temporal_average_sentinel2/1: semi-monthly`: 24 half-month means (days 1-15, 16-end).

    Only acquisitions of the first acquisition's year fall in a period (the reference builds
    the period bounds in that year); offsets are those of the 8th and the 23rd.
    """
    if len(dates) == 0:
        return _empty_average(series, 24)
    ref = _ref(dates[0].year, ref_date)
    year = ref.year
    groups, mids = [], []
    for m in range(1, 13):
        for first_half in (True, False):
            lo, hi, mid = (1, 15, 8) if first_half else (16, 31, 23)
            groups.append(np.flatnonzero([d.year == year and d.month == m and lo <= d.day <= hi for d in dates]))
            mids.append((dt.date(year, m, mid) - ref).days)
    return _fill_periods(series, groups, mids)


def empty_dates(series: np.ndarray, pad_value: float = 0) -> np.ndarray:
    """`(T,)` True where a date of a `(T, C, H, W)` series holds nothing but `models.multitemp_model.pad_value`.

    The reference's U-TAE derives its padding mask from the values (`multitemp_model.py`: a date
    whose every value equals `pad_value` is padding), so such dates are padding there wherever they
    come from: the leading months of a temporal average before the first acquisition (filled
    with zeros), a series emptied by the cloud filter, an all-zero acquisition. The loader's
    `<S>_PAD_MASK` is this rule united with "past the series length" (`trainer.data.collate`).
    """
    if series.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return (series.reshape(series.shape[0], -1) == pad_value).all(axis=1)


def _empty_average(series: np.ndarray, periods: int) -> tuple[np.ndarray, np.ndarray]:
    # The reference crashes on a series with no date left (dates[0]); we return zeros instead.
    return np.zeros((periods, *series.shape[1:]), dtype=np.float64), np.zeros(periods, dtype=np.int64)


def temporal_average(series: np.ndarray, dates: Sequence[dt.date], period: str, ref_date: str) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on `temporal_average_sentinel2/1` (`monthly` or `semi-monthly`)."""
    if period == "monthly":
        return temporal_average_monthly(series, dates, ref_date)
    if period == "semi-monthly":
        return temporal_average_semi_monthly(series, dates, ref_date)
    raise ValueError(f"temporal average period must be 'monthly' or 'semi-monthly', got {period!r}")


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
def label_channel(label: np.ndarray, channel: int = 1) -> np.ndarray:
    """`labels_configs.<TASK>.label_channel_nomenclature`: the 1-based label band, as an (H, W) class map.

    The reference one-hot encodes it into `num_classes` float planes; we keep the class indices
    (argmax of those planes), which is what a cross-entropy loss consumes anyway.
    """
    return label[channel - 1]


# --------------------------------------------------------------------------------------------
# Normalisation, per sample (the reference's way; used by the per-file baseline)
# --------------------------------------------------------------------------------------------
def normalize_custom(arr: np.ndarray, means: Sequence[float], stds: Sequence[float]) -> np.ndarray:
    """`normalization.norm_type: custom`: channel i -> (x - means[i]) / stds[i] in float64.

    Statistics are taken by position among the *selected* channels (so SPOT [4,1,2] gets the
    R, G, B statistics, a reference quirk we keep).
    """
    out = arr.astype(np.float64)
    for i in range(out.shape[0]):
        out[i] -= means[i]
        out[i] /= stds[i]
    return out


def normalize_scaling(arr: np.ndarray) -> np.ndarray:
    """`normalization.norm_type: scaling` (skimage `img_as_float`): unsigned ints times 1/max in float64.

    Float inputs (DEM) pass unchanged, as `img_as_float` leaves them.
    """
    if arr.dtype.kind == "u":
        return np.multiply(arr, 1.0 / np.iinfo(arr.dtype).max, dtype=np.float64)
    if arr.dtype.kind == "f":
        return arr
    raise TypeError(f"scaling normalisation of {arr.dtype} images is not defined by the reference")


def normalize(arr: np.ndarray, norm_type: str, means: Sequence[float] = (), stds: Sequence[float] = ()) -> np.ndarray:
    """Dispatch on `normalization.norm_type` (`custom` / `scaling` / `without`)."""
    if norm_type == "custom":
        return normalize_custom(arr, means, stds)
    if norm_type == "scaling":
        return normalize_scaling(arr)
    if norm_type == "without":
        return arr
    raise ValueError(f"norm_type must be custom, scaling or without, got {norm_type!r}")


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------
def augmentation_draws(rng: np.random.Generator, p_flip: float = 0.5, p_rot: float = 0.5) -> tuple[bool, bool, int]:
    """`pre_processings.use_augmentation`: one sample's draws (horizontal flip, vertical flip, quarter turns).

    Same distribution as the reference (each flip p=0.5; with p=0.5 a rotation by 1-3 quarter
    turns), but drawn from a generator seeded per (seed, epoch, sample) so a run is reproducible.
    """
    hflip = bool(rng.random() < p_flip)
    vflip = bool(rng.random() < p_flip)
    rotate = bool(rng.random() < p_rot)
    k = int(rng.integers(1, 4)) if rotate else 0
    return hflip, vflip, k


def augment(arr: np.ndarray, draws: tuple[bool, bool, int]) -> np.ndarray:
    """Apply the draws to the last two axes of `arr` (every modality and label gets the same ones).

    Order as in the reference: horizontal flip, vertical flip, then `k` counter-clockwise turns.
    """
    hflip, vflip, k = draws
    if hflip:
        arr = arr[..., ::-1]
    if vflip:
        arr = arr[..., ::-1, :]
    if k:
        arr = np.rot90(arr, k=k, axes=(-2, -1))
    return np.ascontiguousarray(arr)
