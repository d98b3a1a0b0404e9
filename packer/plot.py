"""Pictures of samples: `plot_sample(sample)` draws every modality of one patch on one figure.

A raw sample (`packer.shardformat.reader`: `{"patch_id", "meta", "arrays"}`) becomes, top to bottom:
- the mono-temporal inputs: aerial RGB, aerial NIR false colour (NIR-R-G), historical
  panchromatic, DEM as DSM - DTM (height above ground) with a colour bar, SPOT 6-7 RGB;
- the labels, CoSIA and LPIS level 1, in the official class colours (`packer.schema`), each with a
  legend of the classes present and their share of the patch;
- a Sentinel-2 strip, one RGB thumbnail per date with its date, dates whose mask says cloudy or
  snowy framed and labelled (share of pixels with probability > `MASK_PROBABILITY`);
- Sentinel-1 VV and VH over time (patch mean, dB), ascending and descending.
Absent modalities are left out and named in the title. The helpers (`label_rgb`, `rgb_of`) also
serve the training's TensorBoard images, so a class has one colour everywhere.

matplotlib is imported inside the functions, and figures are built with the object API (no
pyplot, no backend switch), so this works the same in a script, a notebook or a worker.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from packer import schema
from packer.atomic import write_bytes_atomic

MASK_PROBABILITY = 50
"""A pixel counts as cloudy (snowy) when the S2 mask's probability exceeds this (0-100)."""
CLOUDY_SHARE = 0.25
"""A date is marked cloudy (snowy) when at least this share of its pixels is."""
CLOUD_EDGE, SNOW_EDGE = "#d62728", "#17becf"
FALLBACK_COLOR = "#7f7f7f"
"""Values outside a class table (e.g. LPIS level 2/3, whose tables are not in the schema)."""


# --------------------------------------------------------------------------------------------
# Helpers shared with the training's TensorBoard images
# --------------------------------------------------------------------------------------------
def class_colors(task: str, n: int | None = None) -> np.ndarray:
    """(n, 3) uint8 colours of `task`'s classes (official table; grey beyond it)."""
    table = schema.CLASS_TABLES.get(task, ())
    n = max(n or 256, len(table))
    lut = np.empty((n, 3), dtype=np.uint8)
    lut[:] = _hex_rgb(FALLBACK_COLOR)
    for c in table:
        if c.value < n:
            lut[c.value] = c.rgb
    return lut


def label_rgb(task: str, classes: np.ndarray) -> np.ndarray:
    """A class map (H, W) -> (H, W, 3) uint8 picture in the official colours."""
    lut = class_colors(task, 256)
    return lut[np.clip(np.asarray(classes), 0, 255).astype(np.uint8)]


def band(modality_name: str, name: str) -> int:
    """Index of band `name` within one date of `modality_name` (schema band names)."""
    return schema.modality(modality_name).band_names.index(name)


def stretch(values: np.ndarray, lo_hi: tuple[float, float] | None = None, percentiles: tuple[float, float] = (2, 98)
            ) -> np.ndarray:
    """Linear stretch to [0, 1] between `lo_hi` (default: the 2nd and 98th percentiles)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = robust_range(v, percentiles) if lo_hi is None else lo_hi
    return np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)


def robust_range(values: np.ndarray, percentiles: tuple[float, float] = (2, 98)) -> tuple[float, float]:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, percentiles)
    return float(lo), float(hi)


def rgb_of(modality_name: str, array: np.ndarray, bands: Sequence[str] = ("R", "G", "B"),
           lo_hi: tuple[float, float] | None = None) -> np.ndarray:
    """(bands, H, W) of one date -> (H, W, 3) float in [0, 1], stretched between the 2nd and 98th
    percentile of the three bands together (one range keeps the hues), or between `lo_hi`."""
    img = np.stack([array[band(modality_name, b)] for b in bands], axis=-1)
    return stretch(img, lo_hi)


def preview_rgb(sample: Mapping[str, Any]) -> np.ndarray | None:
    """The best RGB view of a raw sample: aerial, else SPOT, else the clearest Sentinel-2 date."""
    arrays = sample["arrays"]
    if "AERIAL_RGBI" in arrays:
        return rgb_of("AERIAL_RGBI", arrays["AERIAL_RGBI"])
    if "SPOT_RGBI" in arrays:
        return rgb_of("SPOT_RGBI", arrays["SPOT_RGBI"])
    if "SENTINEL2_TS" in arrays:
        dates = _series(arrays["SENTINEL2_TS"], "SENTINEL2_TS")
        best = int(np.argmax([d.mean() for d in dates[:, band("SENTINEL2_TS", "B08")]])) if len(dates) else 0
        return rgb_of("SENTINEL2_TS", dates[best], ("B04", "B03", "B02")) if len(dates) else None
    return None


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _series(array: np.ndarray, modality_name: str) -> np.ndarray:
    """(bands_per_date * T, H, W) date-major -> (T, bands_per_date, H, W)."""
    per = schema.modality(modality_name).bands_per_date
    return array.reshape(array.shape[0] // per, per, *array.shape[1:])


def _date(text: str | None) -> dt.date | None:
    """`YYYYMMDD` (day or month may be 00 in the metadata) -> a date, or None."""
    if not text or len(text) != 8 or not text.isdigit():
        return None
    y, m, d = int(text[:4]), int(text[4:6]), int(text[6:])
    try:
        return dt.date(y, max(m, 1), max(d, 1))
    except ValueError:
        return None


def _date_label(text: str | None) -> str:
    if not text or len(text) != 8:
        return ""
    if text[4:6] == "00":
        return text[:4]
    return f"{text[:4]}-{text[4:6]}" if text[6:] == "00" else f"{text[:4]}-{text[4:6]}-{text[6:]}"


def _mod_meta(sample: Mapping[str, Any], name: str) -> dict:
    return (sample.get("meta") or {}).get("modalities", {}).get(name, {})


# --------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------
def plot_sample(sample: Mapping[str, Any], path: str | Path | None = None, *, cloudy_share: float = CLOUDY_SHARE,
                dpi: int = 100) -> Any:
    """One figure of every modality of a raw sample (see the module docstring).

    Returns the matplotlib `Figure`; with `path`, also writes it there (PNG, or any format
    matplotlib knows from the suffix), atomically.
    """
    from matplotlib.figure import Figure

    arrays = sample["arrays"]
    inputs = _input_panels(sample)
    labels = [t for t in schema.LABEL_MODALITIES if t in arrays]
    s2 = "SENTINEL2_TS" in arrays and arrays["SENTINEL2_TS"].shape[0] > 0
    s1 = [m for m in ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS") if m in arrays and arrays[m].shape[0] > 0]
    n_dates = arrays["SENTINEL2_TS"].shape[0] // schema.MODALITIES["SENTINEL2_TS"].bands_per_date if s2 else 0
    s2_cols = 12 if n_dates <= 48 else 20
    s2_rows = -(-n_dates // s2_cols) if s2 else 0

    width = 16.0
    sections: list[tuple[str, float]] = []
    if inputs:
        sections.append(("inputs", 3.9))
    if labels:
        sections.append(("labels", 4.2))
    if s2:
        sections.append(("s2", 0.45 + s2_rows * width / s2_cols * 0.95))
    if s1:
        sections.append(("s1", 2.9))
    if not sections:
        raise ValueError(f"{sample.get('patch_id')}: no modality to draw")
    fig = Figure(figsize=(width, sum(h for _, h in sections) + 0.6), dpi=dpi, layout="constrained")
    fig.suptitle(_title(sample), fontsize=12, x=0.01, ha="left")
    subs = fig.subfigures(len(sections), 1, height_ratios=[h for _, h in sections], squeeze=False)[:, 0]
    for (kind, _), sub in zip(sections, subs):
        if kind == "inputs":
            _draw_inputs(sub, inputs)
        elif kind == "labels":
            _draw_labels(sub, sample, labels)
        elif kind == "s2":
            _draw_s2(sub, sample, s2_rows, s2_cols, cloudy_share)
        else:
            _draw_s1(sub, sample, s1)
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
        write_bytes_atomic(path, buf.getvalue())
    return fig


def _title(sample: Mapping[str, Any]) -> str:
    meta = sample.get("meta") or {}
    parts = [str(sample.get("patch_id", "?"))]
    if meta.get("split"):
        parts.append(f"split {meta['split']}")
    if meta.get("domain"):
        parts.append(f"domain {meta['domain']}-{meta.get('year', '')}, ROI {meta.get('roi', '?')}")
    if meta.get("bounds"):
        b = meta["bounds"]
        parts.append(f"{meta.get('crs', '')} x {b[0]:.1f}–{b[2]:.1f}, y {b[1]:.1f}–{b[3]:.1f}")
    absent = [m for m in schema.MODALITY_NAMES if m not in sample["arrays"]]
    line = "  ·  ".join(parts)
    return line + (f"\nabsent: {', '.join(absent)}" if absent else "")


def _input_panels(sample: Mapping[str, Any]) -> list[tuple[str, np.ndarray, dict]]:
    arrays = sample["arrays"]
    panels: list[tuple[str, np.ndarray, dict]] = []
    if "AERIAL_RGBI" in arrays:
        when = _date_label(_mod_meta(sample, "AERIAL_RGBI").get("date"))
        suffix = f" ({when})" if when else ""
        panels.append((f"Aerial RGB{suffix}", rgb_of("AERIAL_RGBI", arrays["AERIAL_RGBI"]), {}))
        panels.append(("Aerial NIR-R-G false colour", rgb_of("AERIAL_RGBI", arrays["AERIAL_RGBI"], ("NIR", "R", "G")), {}))
    if "AERIAL-RLT_PAN" in arrays:
        when = _date_label(_mod_meta(sample, "AERIAL-RLT_PAN").get("date"))
        pan = arrays["AERIAL-RLT_PAN"][0]
        lo, hi = robust_range(pan)
        panels.append((f"Historical panchromatic{f' ({when})' if when else ''}", pan,
                       {"cmap": "gray", "vmin": lo, "vmax": max(hi, lo + 1)}))
    if "DEM_ELEV" in arrays:
        dem = arrays["DEM_ELEV"].astype(np.float64)
        height = dem[band("DEM_ELEV", "DSM")] - dem[band("DEM_ELEV", "DTM")]
        lo, hi = robust_range(height, (1, 99))
        panels.append(("DEM: DSM − DTM", height, {"cmap": "viridis", "vmin": min(lo, 0.0), "vmax": max(hi, 1.0),
                                                 "colorbar": "height above ground (m)"}))
    if "SPOT_RGBI" in arrays:
        when = _date_label(_mod_meta(sample, "SPOT_RGBI").get("date"))
        panels.append((f"SPOT 6-7 RGB{f' ({when})' if when else ''}", rgb_of("SPOT_RGBI", arrays["SPOT_RGBI"]), {}))
    return panels


def _draw_inputs(sub: Any, panels: list[tuple[str, np.ndarray, dict]]) -> None:
    axes = sub.subplots(1, 5)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax, (title, img, kw) in zip(axes, panels):
        kw = dict(kw)
        bar = kw.pop("colorbar", None)
        im = ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if bar:
            cb = sub.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.set_label(bar, fontsize=8)
            cb.ax.tick_params(labelsize=7)


def _draw_labels(sub: Any, sample: Mapping[str, Any], tasks: list[str]) -> None:
    from matplotlib.patches import Patch

    slots = 2 * len(schema.LABEL_MODALITIES)  # the same panel size whether one or both labels are there
    axes = sub.subplots(1, slots)
    for ax in axes[2 * len(tasks):]:
        ax.set_axis_off()
    for k, task in enumerate(tasks):
        classes = sample["arrays"][task][0]  # CoSIA: its one band; LPIS: band 1 = level 1
        ax, leg = axes[2 * k], axes[2 * k + 1]
        ax.imshow(label_rgb(task, classes), interpolation="nearest")
        table = schema.CLASS_TABLES[task]
        level = " level 1" if task == "ALL_LABEL-LPIS" else ""
        ax.set_title(f"{task}{level} ({len(table)} classes)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        values, counts = np.unique(classes, return_counts=True)
        order = np.argsort(-counts)
        names = {c.value: c.name for c in table}
        lut = class_colors(task, 256)
        handles = [Patch(facecolor=lut[int(v)] / 255.0, edgecolor="#555555", linewidth=0.6,
                         label=f"{int(v):>2} {names.get(int(v), 'not in the table')}  {100 * n / classes.size:.1f} %")
                   for v, n in zip(values[order], counts[order])]
        leg.set_axis_off()
        leg.legend(handles=handles, loc="center left", fontsize=8, frameon=False, title="classes present",
                   title_fontsize=9, ncols=1 if len(handles) <= 14 else 2, handlelength=1.2, borderaxespad=0)


def _mask_shares(sample: Mapping[str, Any], n_dates: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per date: share of pixels with cloud / snow probability above MASK_PROBABILITY."""
    mask = sample["arrays"].get("SENTINEL2_MSK-SC")
    if mask is None:
        return None
    m = _series(mask, "SENTINEL2_MSK-SC")
    if m.shape[0] != n_dates:
        return None
    cloud = (m[:, band("SENTINEL2_MSK-SC", "cloud")] > MASK_PROBABILITY).mean(axis=(1, 2))
    snow = (m[:, band("SENTINEL2_MSK-SC", "snow")] > MASK_PROBABILITY).mean(axis=(1, 2))
    return cloud, snow


def _draw_s2(sub: Any, sample: Mapping[str, Any], rows: int, cols: int, cloudy_share: float) -> None:
    series = _series(sample["arrays"]["SENTINEL2_TS"], "SENTINEL2_TS")
    n = series.shape[0]
    dates = _mod_meta(sample, "SENTINEL2_TS").get("dates") or [""] * n
    shares = _mask_shares(sample, n)
    rgb_bands = [band("SENTINEL2_TS", b) for b in ("B04", "B03", "B02")]
    if shares is not None:
        clear = (shares[0] < cloudy_share) & (shares[1] < cloudy_share)
    else:  # no mask: clouds and snow are bright, so the darker half of the dates stands for the clear ones
        brightness = series[:, rgb_bands].mean(axis=(1, 2, 3))
        clear = brightness <= np.median(brightness)
    # One stretch for the whole series, from the clear dates, so dates compare at a glance.
    lo_hi = robust_range(series[clear if clear.any() else slice(None)][:, rgb_bands])
    note = "" if shares is None else (f"; framed: ≥ {100 * cloudy_share:.0f} % of pixels with cloud (red) or "
                                      f"snow (cyan) probability > {MASK_PROBABILITY}")
    sub.suptitle(f"Sentinel-2 RGB (B04, B03, B02), {n} dates{note}", fontsize=10, x=0.01, ha="left")
    axes = np.atleast_1d(sub.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        ax.imshow(rgb_of("SENTINEL2_TS", series[i], ("B04", "B03", "B02"), lo_hi=lo_hi), interpolation="nearest")
        label = _date_label(dates[i]) if i < len(dates) else ""
        color, edge = "black", None
        if shares is not None and shares[0][i] >= cloudy_share:
            label, color, edge = f"{label}\ncloud {100 * shares[0][i]:.0f} %", CLOUD_EDGE, CLOUD_EDGE
        elif shares is not None and shares[1][i] >= cloudy_share:
            label, color, edge = f"{label}\nsnow {100 * shares[1][i]:.0f} %", SNOW_EDGE, SNOW_EDGE
        ax.set_title(label, fontsize=7, color=color, pad=2)
        for spine in ax.spines.values():
            spine.set_edgecolor(edge or "#bbbbbb")
            spine.set_linewidth(2.5 if edge else 0.5)


def _draw_s1(sub: Any, sample: Mapping[str, Any], modalities: list[str]) -> None:
    import matplotlib.dates as mdates

    ax = sub.subplots(1, 1)
    colors = {"SENTINEL1-ASC_TS": "#1f77b4", "SENTINEL1-DESC_TS": "#ff7f0e"}
    for m in modalities:
        series = _series(sample["arrays"][m].astype(np.float64), m)
        dates = [_date(d) for d in (_mod_meta(sample, m).get("dates") or [])]
        x = dates if len(dates) == series.shape[0] and all(dates) else list(range(series.shape[0]))
        orbit = "ascending" if "ASC" in m else "descending"
        for b, style in (("VV", "-"), ("VH", "--")):
            linear = np.nanmean(series[:, band(m, b)], axis=(1, 2))
            with np.errstate(divide="ignore", invalid="ignore"):
                db = np.where(linear > 0, 10 * np.log10(linear), np.nan)
            ax.plot(x, db, style, marker="o", markersize=3, color=colors[m], label=f"{b} {orbit}")
    ax.set_title("Sentinel-1 backscatter over time (patch mean)", fontsize=10, loc="left")
    ax.set_ylabel("σ0 (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=4, loc="upper left", bbox_to_anchor=(0, -0.14), frameon=False)
    if any(isinstance(v, dt.date) for v in ax.lines[0].get_xdata()) if ax.lines else False:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
