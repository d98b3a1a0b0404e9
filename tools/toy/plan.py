"""The layout of a toy tree: domains, ROIs, patch grid, dates, splits and missing modalities.

Everything here is cheap (no pixels) and runs in the parent process, so that the rendering of a
patch depends only on its `PatchPlan` and the run seed: that keeps the output byte-identical
whatever the number of worker processes.

Geometry convention (the dataset card does not say what R and C mean): R is the row,
counted north -> south, and C the column, west -> east. The upper-left corner of patch (R, C) is
`roi.origin + ((C - 1) * 102.4, -(R - 1) * 102.4)` in Lambert-93 metres.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from packer.schema import (
    DOMAIN_YEARS,
    MODALITY_NAMES,
    OFFICIAL_TEST_DOMAINS,
    PATCH_METERS,
    SENTINEL_DATES_FILES,
    SPLITS,
    PatchId,
)

OPTIONAL_GROUPS: tuple[tuple[str, ...], ...] = (
    ("AERIAL-RLT_PAN",),
    ("SPOT_RGBI",),
    ("SENTINEL1-ASC_TS",),
    ("SENTINEL1-DESC_TS",),
    ("SENTINEL2_TS", "SENTINEL2_MSK-SC"),  # the mask is meaningless without its series
)
"""Modalities a `--missing-fraction` patch may lack; aerial, DEM and labels are always present."""

STRATA_LETTERS = "UAFNV"
ROI_NAME_RE = re.compile(r"^[UAFNV]{2}-S[12]-[UVN]?\d+$")
"""The grammar of every ROI name in the official toy CSVs."""

VALID_FRACTION = 0.2
"""Share of the non-test patches drawn into `valid` (the official split 1 has ~20 %)."""

# Rough mainland-France extent in Lambert-93 metres (inside 100-1200 km east, 6000-7200 km north).
_L93_X = (200_000.0, 1_050_000.0)
_L93_Y = (6_250_000.0, 7_050_000.0)
_ROI_SCATTER_M = 20_000.0


def stable_int(*parts: object) -> int:
    """A 64-bit integer from strings, stable across processes and Python versions (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    """An independent generator for one named thing (an ROI, a patch) of run `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, stable_int(*parts)]))


@dataclass(frozen=True)
class RoiPlan:
    """One ROI: a contiguous grid of patches sharing dates, landscape statistics and a scene seed."""

    domain: str
    year: int
    name: str
    origin: tuple[float, float]  # upper-left corner of patch (1, 1), EPSG:2154 metres
    rows: int
    cols: int
    series_dates: dict[str, tuple[str, ...]]  # SENTINEL2_TS / SENTINEL1-ASC_TS / SENTINEL1-DESC_TS -> YYYYMMDD
    aerial_date: str
    historical_date: str
    spot_date: str
    scene_seed: int

    @property
    def key(self) -> str:
        return f"{self.domain}-{self.year:04d}_{self.name}"

    def patch_origin(self, row: int, col: int) -> tuple[float, float]:
        """Upper-left corner of patch (row, col); rows go north -> south (see module docstring)."""
        return (self.origin[0] + (col - 1) * PATCH_METERS, self.origin[1] - (row - 1) * PATCH_METERS)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the whole ROI grid."""
        x0, y0 = self.origin
        return (x0, y0 - self.rows * PATCH_METERS, x0 + self.cols * PATCH_METERS, y0)


@dataclass(frozen=True)
class PatchPlan:
    """One patch: its id, ROI, split and the modalities written for it."""

    pid: PatchId
    roi: RoiPlan
    split: str
    modalities: tuple[str, ...]

    @property
    def patch_id(self) -> str:
        return str(self.pid)

    @property
    def origin(self) -> tuple[float, float]:
        return self.roi.patch_origin(self.pid.row, self.pid.col)

    def n_dates(self) -> dict[str, int]:
        """T per series the patch has (the S2 mask shares SENTINEL2_TS's dates)."""
        return {s: len(d) for s, d in self.roi.series_dates.items() if s in self.modalities}


@dataclass
class LayoutRequest:
    """What `plan_layout` needs from the generator config (kept separate so plan has no CLI deps)."""

    patches: int
    domains: int
    rois_per_domain: int
    seed: int
    t_ranges: dict[str, tuple[int, int]]
    missing_fraction: float
    from_csv: Sequence[Path] | None = None
    csv_limit: int | None = None
    valid_fraction: float = VALID_FRACTION


# --------------------------------------------------------------------------------------------
# Domains, ROI names and dates
# --------------------------------------------------------------------------------------------
def pick_domain_years(n: int, rng: np.random.Generator) -> tuple[list[tuple[str, int]], set[str]]:
    """`n` domain-years: about a third from the official test domains, the rest from the others.

    With three or more train domain-years, one multi-year domain contributes both of its years so
    that the shared `195X` historical folder is exercised.
    """
    if n < 1:
        raise ValueError(f"domains must be >= 1, got {n}")
    n_test = 0 if n < 2 else max(1, round(n / 3))
    n_train = n - n_test
    test_pool = sorted(OFFICIAL_TEST_DOMAINS)
    train_pool = sorted(d for d in DOMAIN_YEARS if d not in OFFICIAL_TEST_DOMAINS)
    if n_test > len(test_pool) or n_train > sum(len(DOMAIN_YEARS[d]) for d in train_pool):
        raise ValueError(f"domains={n} is more than the real dataset has ({sum(map(len, DOMAIN_YEARS.values()))})")
    test = [(d, DOMAIN_YEARS[d][0]) for d in rng.choice(test_pool, n_test, replace=False)]
    train: list[tuple[str, int]] = []
    multi = [d for d in train_pool if len(DOMAIN_YEARS[d]) > 1]
    if n_train >= 3:
        d = str(rng.choice(multi))
        train += [(d, y) for y in DOMAIN_YEARS[d]][: n_train]
    singles = [d for d in train_pool if len(DOMAIN_YEARS[d]) == 1]
    for d in rng.choice(singles, n_train - len(train), replace=False):
        train.append((str(d), DOMAIN_YEARS[str(d)][0]))
    chosen = sorted(set(train) | set(test))
    return chosen, {d for d, _ in test}


def roi_names(count: int, rng: np.random.Generator, taken: set[str]) -> list[str]:
    """`count` ROI names of the real grammar `<2 of UAFNV>-S<1|2>-<opt U|V|N><int>`, unique in `taken`."""
    names: list[str] = []
    while len(names) < count:
        strata = "".join(rng.choice(list(STRATA_LETTERS), 2))
        session = int(rng.integers(1, 3))
        prefix = str(rng.choice(["", "", "", "U", "V", "N"]))
        name = f"{strata}-S{session}-{prefix}{int(rng.integers(1, 60))}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _day_string(year: int, day_of_year: int) -> str:
    return (dt.date(year, 1, 1) + dt.timedelta(days=int(day_of_year))).strftime("%Y%m%d")


def draw_series_dates(year: int, t_range: tuple[int, int], rng: np.random.Generator) -> tuple[str, ...]:
    """T sorted distinct dates inside `year`, T uniform in `t_range` (inclusive)."""
    n_days = 366 if year % 4 == 0 else 365
    t = int(rng.integers(t_range[0], t_range[1] + 1))
    days = np.sort(rng.choice(n_days, size=t, replace=False))
    return tuple(_day_string(year, d) for d in days)


def draw_roi(domain: str, year: int, name: str, rows: int, cols: int, centre: tuple[float, float],
             req: LayoutRequest) -> RoiPlan:
    """Dates, origin and scene seed of one ROI, from the run seed and the ROI key only."""
    rng = rng_for(req.seed, "roi", domain, year, name)
    ox = round(centre[0] + rng.uniform(-_ROI_SCATTER_M, _ROI_SCATTER_M))
    oy = round(centre[1] + rng.uniform(-_ROI_SCATTER_M, _ROI_SCATTER_M))
    dates = {s: draw_series_dates(year, req.t_ranges[s], rng) for s in SENTINEL_DATES_FILES}
    aerial = _day_string(year, int(rng.integers(110, 260)))  # flights from late April to mid-September
    hist_year, hist_month = int(rng.integers(1947, 1966)), int(rng.integers(4, 10))
    # Some historical dates only know the month: the real files then carry day 00.
    hist_day = 0 if rng.random() < 0.3 else int(rng.integers(1, 29))
    spot_year = year + int(rng.integers(-1, 1))
    spot = _day_string(spot_year, int(rng.integers(90, 280)))
    return RoiPlan(
        domain=domain, year=year, name=name, origin=(float(ox), float(oy)), rows=rows, cols=cols,
        series_dates=dates, aerial_date=aerial, historical_date=f"{hist_year:04d}{hist_month:02d}{hist_day:02d}",
        spot_date=spot, scene_seed=stable_int(req.seed, "scene", domain, year, name),
    )


def domain_centre(domain: str, seed: int) -> tuple[float, float]:
    """Where a domain's ROIs cluster; shared by all years of a multi-year domain."""
    rng = rng_for(seed, "domain", domain)
    return (rng.uniform(*_L93_X), rng.uniform(*_L93_Y))


# --------------------------------------------------------------------------------------------
# Splits and missing modalities
# --------------------------------------------------------------------------------------------
def random_valid(ids: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    """The random train/valid split of the non-test patches (at least one valid if there are two)."""
    if len(ids) < 2 or fraction <= 0:
        return set()
    n_valid = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    return set(np.asarray(ids)[rng.permutation(len(ids))[:n_valid]].tolist())


def draw_missing(ids: list[str], fraction: float, seed: int) -> dict[str, set[str]]:
    """Patches that lack optional modalities: round(fraction * N) of them (at least one if > 0)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1], got {fraction}")
    if fraction == 0 or not ids:
        return {}
    rng = rng_for(seed, "missing")
    n = min(len(ids), max(1, round(fraction * len(ids))))
    chosen = sorted(ids)
    picked = [chosen[i] for i in sorted(rng.permutation(len(chosen))[:n])]
    out: dict[str, set[str]] = {}
    for pid in picked:
        keep = rng.random(len(OPTIONAL_GROUPS)) < 0.5
        if not keep.any():
            keep[int(rng.integers(len(OPTIONAL_GROUPS)))] = True
        out[pid] = {m for g, k in zip(OPTIONAL_GROUPS, keep) if k for m in g}
    return out


# --------------------------------------------------------------------------------------------
# Official split CSVs as input (--from-csv)
# --------------------------------------------------------------------------------------------
_SPLIT_TOKEN = re.compile(r"(?i)(?:^|[^a-z])(train|valid|val|test)(?:[^a-z]|$)")


def split_of_csv(path: Path) -> str:
    """The split a CSV holds, from its name (`..._TRAIN.csv`, `valid.csv`, `test_fold1.csv`)."""
    m = _SPLIT_TOKEN.search(path.stem)
    if not m:
        raise ValueError(f"{path}: cannot tell the split from the file name (it must contain train, valid, val or test)")
    token = m.group(1).lower()
    return "valid" if token == "val" else token


def read_split_csv(path: Path, limit: int | None = None) -> list[tuple[str, dict[str, bool]]]:
    """(patch_id, {modality: has a file}) for every row; `,` or `;` separated (full CSVs may use `;`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the split CSV ({exc})") from exc
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path}: empty split CSV")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    if reader.fieldnames is None or "patch_id" not in reader.fieldnames:
        raise ValueError(f"{path}: no 'patch_id' column in header {reader.fieldnames}")
    rows: list[tuple[str, dict[str, bool]]] = []
    for line_no, row in enumerate(reader, start=2):
        pid = (row.get("patch_id") or "").strip()
        try:
            PatchId.parse(pid)
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: {exc}") from None
        # A modality column that is absent or empty means the patch has no file for it.
        present = {m: bool((row.get(m) or "").strip()) for m in MODALITY_NAMES}
        rows.append((pid, present))
        if limit is not None and len(rows) >= limit:
            break
    return rows


# --------------------------------------------------------------------------------------------
# The whole layout
# --------------------------------------------------------------------------------------------
def _grid_shape(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def plan_layout(req: LayoutRequest) -> list[PatchPlan]:
    """Every patch of the toy tree, sorted by patch id (CSV order is kept for `--from-csv`)."""
    for series, (lo, hi) in req.t_ranges.items():
        if not 1 <= lo <= hi <= 365:
            raise ValueError(f"T range of {series} must satisfy 1 <= min <= max <= 365, got ({lo}, {hi})")
    if req.from_csv:
        return _plan_from_csv(req)
    if req.patches < 1:
        raise ValueError(f"patches must be >= 1, got {req.patches}")
    if req.rois_per_domain < 1:
        raise ValueError(f"rois_per_domain must be >= 1, got {req.rois_per_domain}")
    rng = rng_for(req.seed, "layout")
    domain_years, test_domains = pick_domain_years(req.domains, rng)
    n_rois = len(domain_years) * req.rois_per_domain
    counts = [req.patches // n_rois + (1 if i < req.patches % n_rois else 0) for i in range(n_rois)]
    taken: dict[str, set[str]] = {}
    cells: list[tuple[PatchId, RoiPlan]] = []
    for i, (domain, year) in enumerate(domain_years):
        # ROI names are unique per domain, across its years, because the 195X folder is shared.
        names = roi_names(req.rois_per_domain, rng, taken.setdefault(domain, set()))
        for j, name in enumerate(names):
            n = counts[i * req.rois_per_domain + j]
            if n == 0:
                continue
            rows, cols = _grid_shape(n)
            roi = draw_roi(domain, year, name, rows, cols, domain_centre(domain, req.seed), req)
            for k in range(n):
                cells.append((PatchId(domain, year, name, k // cols + 1, k % cols + 1), roi))
    cells.sort(key=lambda c: str(c[0]))
    ids = [str(p) for p, _ in cells]
    valid = random_valid([i for (p, _), i in zip(cells, ids) if p.domain not in test_domains],
                         req.valid_fraction, rng_for(req.seed, "split"))
    missing = draw_missing(ids, req.missing_fraction, req.seed)
    plans = []
    for (pid, roi), sid in zip(cells, ids):
        split = "test" if pid.domain in test_domains else ("valid" if sid in valid else "train")
        mods = tuple(m for m in MODALITY_NAMES if m not in missing.get(sid, ()))
        plans.append(PatchPlan(pid, roi, split, mods))
    return plans


def _plan_from_csv(req: LayoutRequest) -> list[PatchPlan]:
    """Reproduce the patch ids of official split CSVs; a patch's split is the CSV it came from."""
    rows: list[tuple[str, str, dict[str, bool]]] = []
    seen: dict[str, Path] = {}
    for path in req.from_csv or ():
        path = Path(path)
        split = split_of_csv(path)
        for pid, present in read_split_csv(path, req.csv_limit):
            if pid in seen:
                raise ValueError(f"{path}: patch {pid} is also in {seen[pid]}")
            seen[pid] = path
            rows.append((pid, split, present))
    if not rows:
        raise ValueError("--from-csv: the CSVs hold no patch")
    parsed = [(PatchId.parse(pid), split, present) for pid, split, present in rows]
    extent: dict[tuple[str, int, str], tuple[int, int]] = {}
    for p, _, _ in parsed:
        r, c = extent.get((p.domain, p.year, p.roi), (0, 0))
        extent[(p.domain, p.year, p.roi)] = (max(r, p.row), max(c, p.col))
    rois = {
        key: draw_roi(key[0], key[1], key[2], r, c, domain_centre(key[0], req.seed), req)
        for key, (r, c) in sorted(extent.items())
    }
    missing = draw_missing([pid for pid, _, _ in rows], req.missing_fraction, req.seed)
    plans = []
    for (p, split, present), (pid, _, _) in zip(parsed, rows):
        mods = tuple(m for m in MODALITY_NAMES if present[m] and m not in missing.get(pid, ()))
        if "SENTINEL2_TS" not in mods:
            mods = tuple(m for m in mods if m != "SENTINEL2_MSK-SC")
        plans.append(PatchPlan(p, rois[(p.domain, p.year, p.roi)], split, mods))
    for split in {p.split for p in plans}:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
    return plans
