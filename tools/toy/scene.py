"""A synthetic landscape per ROI, and every modality of a patch rendered from it.

The landscape is defined in ROI-local metres, so neighbouring patches continue each other (what a
zonal mosaic needs) and every modality of a patch sees the same ground:
- land-cover cells: a power-weighted Voronoi diagram over a jittered grid of seeds whose class
  frequencies follow the ROI strata letters (`UU` urban, `AA` agricultural, `FF` forest, `NN`
  natural, `V` vineyard); about half of the seeds take the dominant class of their ~150 m zone,
  so forests, fields and towns span several cells; boundaries are bent by a smooth warp field;
  seeds and rectangles are drawn per 102.4 m grid cell, so a patch only needs its 3x3 cells;
- small rectangles on top for buildings, swimming pools and greenhouses;
- LPIS crops on agricultural cells, background elsewhere.
Each sensor maps that ground through per-class signatures (colours, heights, phenology curves,
backscatter) plus texture/speckle noise, so every modality carries the label signal.

The LPIS level-2/3 hierarchy below is synthetic (the real level-2/3 tables are not in schema):
it is only consistent (every level-3 class has one level-2 parent and every level-2 one level-1
parent, background -> background).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from packer.schema import COSIA_CLASSES, LPIS_LEVEL_CLASS_COUNTS, MODALITIES, PATCH_METERS

from .plan import PatchPlan, RoiPlan, rng_for

N_COSIA = len(COSIA_CLASSES)
N_L1, N_L2, N_L3 = LPIS_LEVEL_CLASS_COUNTS
BG1, BG2, BG3 = N_L1 - 1, N_L2 - 1, N_L3 - 1

# CoSIA ids used by the generator's rules (names from schema.COSIA_CLASSES).
_C = {c.name: c.value for c in COSIA_CLASSES}
BUILDING, GREENHOUSE, POOL = _C["building"], _C["greenhouse"], _C["swimming_pool"]
IMPERVIOUS, PERVIOUS, BARE, WATER, SNOW = (_C[n] for n in ("impervious surface", "pervious surface", "bare soil", "water", "snow"))
HERBACEOUS, AGRICULTURAL, PLOWED, VINEYARD = (_C[n] for n in ("herbaceous vegetation", "agricultural land", "plowed land", "vineyard"))
DECIDUOUS, CONIFEROUS, BRUSHWOOD, CLEAR_CUT, LIGNEOUS, MIXED, UNDEFINED = (
    _C[n] for n in ("deciduous", "coniferous", "brushwood", "clear cut", "ligneous", "mixed", "undefined"))

# --------------------------------------------------------------------------------------------
# LPIS hierarchy (synthetic but consistent)
# --------------------------------------------------------------------------------------------
_EXTRA_L2_PARENTS = (0, 1, 1, 2, 3, 16, 18, 20)  # level-1 classes split into two level-2 classes
_EXTRA_L3_PARENTS = (0, 1, 1, 2, 3, 4, 8, 12, 16, 18, 22, 23, 24, 26, 27)
L2_PARENT = np.array([*range(N_L1 - 1), *_EXTRA_L2_PARENTS, BG1], dtype=np.uint8)
L3_PARENT = np.array([*range(N_L2 - 1), *_EXTRA_L3_PARENTS, BG2], dtype=np.uint8)
assert L2_PARENT.size == N_L2 and L3_PARENT.size == N_L3
L3_TO_L1 = L2_PARENT[L3_PARENT]
_L3_CHILDREN = {l1: np.flatnonzero(L3_TO_L1 == l1) for l1 in range(N_L1)}
ARABLE_L1 = tuple(range(1, 16)) + (21,)  # cereals to other arable crops, and mixed crops
VINE_L1, ORCHARD_L1, GRASS_L1 = 16, 18, 0

# --------------------------------------------------------------------------------------------
# Class composition by ROI strata letter (cell classes; buildings/pools/greenhouses are rectangles)
# --------------------------------------------------------------------------------------------
def _weights(**kw: float) -> np.ndarray:
    w = np.zeros(N_COSIA)
    for name, value in kw.items():
        w[_C[name.replace("_", " ")]] = value
    # A few pixels of the classes the reference does not score (15-18), as in the real labels.
    w[[CLEAR_CUT, LIGNEOUS, MIXED, UNDEFINED]] += (0.012, 0.01, 0.01, 0.004)
    return w / w.sum()


LETTER_WEIGHTS = {
    "U": _weights(impervious_surface=.30, pervious_surface=.25, bare_soil=.04, water=.02,
                  herbaceous_vegetation=.18, agricultural_land=.03, deciduous=.12, coniferous=.02, brushwood=.04),
    "A": _weights(agricultural_land=.38, plowed_land=.18, herbaceous_vegetation=.18, pervious_surface=.03,
                  impervious_surface=.03, bare_soil=.03, water=.02, deciduous=.08, brushwood=.04, vineyard=.02),
    "F": _weights(deciduous=.38, coniferous=.26, brushwood=.1, herbaceous_vegetation=.1,
                  agricultural_land=.04, water=.02, impervious_surface=.02, bare_soil=.02),
    "N": _weights(herbaceous_vegetation=.28, brushwood=.2, bare_soil=.1, water=.1, deciduous=.12,
                  coniferous=.08, snow=.03, pervious_surface=.03, agricultural_land=.04),
    "V": _weights(vineyard=.42, agricultural_land=.14, herbaceous_vegetation=.14, plowed_land=.06,
                  pervious_surface=.05, impervious_surface=.04, deciduous=.08, brushwood=.04),
}
LETTER_BUILT = {"U": 0.22, "A": 0.025, "F": 0.01, "N": 0.01, "V": 0.03}  # building area share
LETTER_GREENHOUSE = {"U": 0.002, "A": 0.01, "F": 0.0, "N": 0.0, "V": 0.004}

# --------------------------------------------------------------------------------------------
# Spectral / physical signatures per CoSIA class (and offsets per LPIS level-1 crop)
# --------------------------------------------------------------------------------------------
AERIAL_RGBI = np.array([
    (150, 120, 115, 105), (205, 210, 215, 185), (60, 175, 205, 45), (112, 112, 115, 95),
    (150, 140, 120, 130), (165, 135, 100, 140), (35, 55, 65, 18), (240, 244, 250, 228),
    (95, 132, 72, 190), (125, 142, 82, 172), (138, 112, 88, 118), (105, 118, 78, 150),
    (58, 96, 52, 205), (32, 58, 40, 140), (95, 105, 68, 160), (122, 110, 84, 128),
    (80, 102, 60, 172), (50, 82, 50, 172), (100, 100, 100, 100),
], dtype=np.float32)
AERIAL_TEXTURE = np.array([10, 6, 4, 7, 12, 9, 3, 3, 10, 8, 10, 14, 18, 16, 14, 12, 14, 16, 8], dtype=np.float32)
_CROP_OFFSET_RNG = np.random.default_rng(20250101)  # fixed: signatures are constants, not per run
CROP_AERIAL_OFFSET = np.vstack([_CROP_OFFSET_RNG.uniform(-14, 14, (N_L1 - 1, 4)), np.zeros((1, 4))]).astype(np.float32)

SPOT_GAIN = np.array((4.2, 4.4, 4.6, 7.0), dtype=np.float32)  # aerial DN -> SPOT reflectance-like DN
HEIGHT_RANGE = {DECIDUOUS: (10, 25), CONIFEROUS: (12, 30), MIXED: (10, 25), LIGNEOUS: (2, 8),
                BRUSHWOOD: (1, 4), VINEYARD: (1, 2), AGRICULTURAL: (0.2, 1.2), HERBACEOUS: (0, 0.5)}

_SOIL = np.array([900, 1200, 1500, 1700, 1800, 1900, 2000, 2100, 2800, 2400], dtype=np.float32)
_VEG = np.array([300, 600, 350, 1000, 2500, 3200, 3500, 3700, 2000, 1000], dtype=np.float32)
_WATER = np.array([600, 500, 350, 250, 200, 180, 150, 140, 80, 50], dtype=np.float32)
_URBAN = np.array([1100, 1200, 1300, 1400, 1500, 1600, 1700, 1750, 2000, 1800], dtype=np.float32)
_SNOWS = np.array([9000, 9000, 8800, 8500, 8000, 7800, 7500, 7200, 1500, 1200], dtype=np.float32)
_CLOUD = np.array([7000, 7100, 7200, 7200, 7300, 7300, 7400, 7400, 5500, 4500], dtype=np.float32)

# Per CoSIA class: (soil end-member, g_min, g_max, peak day, width days, veg scale, S1 VV dB at g=0,
# VV gain dB per unit greenness, VV-VH gap dB). Soil end-member 0 soil, 1 water, 2 urban, 3 snow.
_PHENO = {
    BUILDING: (2, 0, 0, 180, 60, 1, -4, 0, 7), GREENHOUSE: (2, 0, 0, 180, 60, 1, -6, 0, 8),
    POOL: (1, 0, 0, 180, 60, 1, -18, 0, 9), IMPERVIOUS: (2, 0, 0, 180, 60, 1, -8, 0, 8),
    PERVIOUS: (0, .3, .5, 150, 90, 1, -11, 2, 7), BARE: (0, .03, .08, 150, 60, 1, -13, 0, 8),
    WATER: (1, 0, 0, 180, 60, 1, -21, 0, 6), SNOW: (3, 0, 0, 180, 60, 1, -14, 0, 7),
    HERBACEOUS: (0, .4, .85, 140, 80, 1, -13, 3, 6), AGRICULTURAL: (0, .1, .9, 160, 35, 1, -15, 6, 7),
    PLOWED: (0, .05, .5, 110, 25, 1, -14, 4, 8), VINEYARD: (0, .2, .7, 200, 45, 1, -11, 3, 6),
    DECIDUOUS: (0, .15, .95, 190, 60, 1, -9, 1.5, 5), CONIFEROUS: (0, .72, .8, 180, 90, .72, -8, 0.5, 5),
    BRUSHWOOD: (0, .3, .6, 170, 70, 1, -11, 2, 6), CLEAR_CUT: (0, .2, .45, 170, 60, 1, -12, 2, 7),
    LIGNEOUS: (0, .4, .8, 180, 60, 1, -10, 2, 6), MIXED: (0, .5, .9, 185, 60, .9, -8.5, 1, 5),
    UNDEFINED: (0, .3, .3, 180, 60, 1, -12, 0, 7),
}
_PHENO_TABLE = np.array([_PHENO[c] for c in range(N_COSIA)], dtype=np.float32)
# Each crop (LPIS level 1) has its own growing season, which is what lets S2/S1 tell crops apart.
_CROP_PEAK = np.linspace(95, 250, N_L1 - 1).astype(np.float32)[np.random.default_rng(7).permutation(N_L1 - 1)]
_CROP_WIDTH = np.random.default_rng(8).uniform(22, 55, N_L1 - 1).astype(np.float32)
N_KEYS = N_COSIA * N_L1
"""A ground 'key' = cosia * 23 + lpis level 1: the unit the coarse sensors aggregate."""


def _key_pheno() -> np.ndarray:
    """Phenology/backscatter parameters per ground key (crop season replaces the class season)."""
    table = np.repeat(_PHENO_TABLE, N_L1, axis=0).copy()
    crop = np.tile(np.arange(N_L1), N_COSIA)
    has = crop < BG1
    table[has, 3] = _CROP_PEAK[crop[has]]
    table[has, 4] = _CROP_WIDTH[crop[has]]
    table[has, 1] = np.minimum(table[has, 1], 0.1)
    table[has, 2] = np.maximum(table[has, 2], 0.8)
    return table


KEY_PHENO = _key_pheno()


def day_of_year(dates: tuple[str, ...]) -> np.ndarray:
    return np.array([dt.datetime.strptime(d, "%Y%m%d").timetuple().tm_yday for d in dates], dtype=np.float32)


def greenness(doy: np.ndarray, pheno: np.ndarray, shift: float) -> np.ndarray:
    """(keys, T) vegetation fraction over the year: a Gaussian season between g_min and g_max."""
    gmin, gmax, peak, width = (pheno[:, i, None] for i in (1, 2, 3, 4))
    return gmin + (gmax - gmin) * np.exp(-0.5 * ((doy[None, :] - peak - shift) / width) ** 2)


def s2_signatures(doy: np.ndarray, shift: float) -> np.ndarray:
    """(keys, T, 10) Sentinel-2 reflectance x 1e4 per ground key and date."""
    g = greenness(doy, KEY_PHENO, shift)[..., None]
    ends = np.stack([_SOIL, _WATER, _URBAN, _SNOWS])[KEY_PHENO[:, 0].astype(int)][:, None, :]
    veg = _VEG[None, None, :] * KEY_PHENO[:, 5, None, None]
    return ((1 - g) * ends + g * veg).astype(np.float32)


def s1_signatures(doy: np.ndarray, shift: float, offset_db: float) -> np.ndarray:
    """(keys, T, 2) linear sigma0 (VV, VH): vegetation growth raises VV and closes the VV-VH gap."""
    g = greenness(doy, KEY_PHENO, shift)
    vv = KEY_PHENO[:, 6, None] + KEY_PHENO[:, 7, None] * g + offset_db
    vh = vv - (KEY_PHENO[:, 8, None] - 2.0 * g)
    return (10.0 ** (np.stack([vv, vh], axis=-1) / 10.0)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# ROI scene
# --------------------------------------------------------------------------------------------
ZONE_M = 150.0
ZONE_SHARE = 0.55  # share of seeds that take their zone's dominant class
SEEDS_PER_AXIS = 4  # land-cover seeds per patch cell and axis (25.6 m apart before jitter)
QUERY_MARGIN_M = 55.0  # > farthest a point can be from its nearest seed (jittered grid + warp)


@dataclass
class RoiScene:
    """What the patches of an ROI share: composition, warp, terrain, flight gain and the series
    signatures. Coordinates are metres from the ROI origin (u east, v south)."""

    roi: RoiPlan
    weights: np.ndarray  # cell-class frequencies from the strata letters
    built: float  # building area share
    greenhouse: float
    warp: np.ndarray  # (4, 4): kx, ky, phase, amplitude; rows 0-1 bend u, rows 2-3 bend v
    terrain: np.ndarray  # (5, 4): kx, ky, phase, amplitude
    base_alt: float
    slope: tuple[float, float]
    gain: np.ndarray  # aerial per-band gain of this flight
    zone_offset: tuple[float, float]
    s2_sig: np.ndarray
    s2_state: np.ndarray  # per date: 0 clear, 1 thin haze (passes the filter), 2 cloudy, 3 snowy
    s2_cover: np.ndarray
    s1_sig: dict[str, np.ndarray]


@dataclass
class CellContent:
    """Land-cover seeds and rectangles anchored in one 102.4 m grid cell of an ROI.

    Drawn from the cell's own generator, so a patch needs only its 3x3 neighbourhood, whatever the
    ROI size (official ROIs reach 25x25 cells), and neighbours agree on their shared ground.
    """

    u: np.ndarray
    v: np.ndarray
    w: np.ndarray  # power-diagram weights (m^2): bigger = larger cell
    cls: np.ndarray
    l3: np.ndarray
    bright: np.ndarray
    height: np.ndarray
    rects: np.ndarray  # (n, 7): u0, v0, u1, v1, class, height, brightness


def _strata_mix(name: str, table: dict) -> np.ndarray | float:
    a, b = name[0], name[1]
    return 0.6 * np.asarray(table[a]) + 0.4 * np.asarray(table[b])


def _crops_for(cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A level-3 LPIS class per land-cover seed (background when the land is not farmed)."""
    l3 = np.full(cls.shape, BG3, np.uint8)
    for i, c in enumerate(cls):
        if c in (AGRICULTURAL, PLOWED):
            l1 = int(rng.choice(ARABLE_L1))
        elif c == VINEYARD:
            l1 = VINE_L1
        elif c == HERBACEOUS and rng.random() < 0.6:
            l1 = GRASS_L1
        elif c == DECIDUOUS and rng.random() < 0.1:
            l1 = ORCHARD_L1
        else:
            continue
        l3[i] = rng.choice(_L3_CHILDREN[l1])
    return l3


def _sin_params(rng: np.random.Generator, n: int, wavelengths: tuple[float, float], amp: tuple[float, float]) -> np.ndarray:
    lam = rng.uniform(*wavelengths, n)
    theta = rng.uniform(0, np.pi, n)
    k = 2 * np.pi / lam
    return np.stack([k * np.cos(theta), k * np.sin(theta), rng.uniform(0, 2 * np.pi, n), rng.uniform(*amp, n)], axis=1)


def _draw_s2_states(t: int, doy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-date sky state; at least one date fails the cloud filter and (T >= 2) one passes."""
    state = rng.choice(4, size=t, p=(0.58, 0.12, 0.25, 0.05)).astype(np.int8)
    winter = (doy < 75) | (doy > 330)
    state[(state == 3) & ~winter] = 2
    cover = np.where(state >= 2, rng.uniform(0.3, 1.0, t), rng.uniform(0.005, 0.03, t))
    if not (state >= 2).any():
        state[int(rng.integers(t))] = 2
        cover[state == 2] = rng.uniform(0.3, 1.0)
    if t >= 2 and not (state < 2).any():
        i = int(rng.integers(t))
        state[i], cover[i] = 0, 0.0
    return state, cover.astype(np.float32)


def build_scene(roi: RoiPlan) -> RoiScene:
    rng = np.random.default_rng(roi.scene_seed)
    doy_s2 = day_of_year(roi.series_dates["SENTINEL2_TS"])
    shift = float(rng.uniform(-10, 10))
    state, cover = _draw_s2_states(len(doy_s2), doy_s2, rng)
    s1 = {s: s1_signatures(day_of_year(roi.series_dates[s]), shift, float(rng.uniform(-0.7, 0.7)))
          for s in ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")}
    return RoiScene(
        roi=roi, weights=_strata_mix(roi.name, LETTER_WEIGHTS), built=float(_strata_mix(roi.name, LETTER_BUILT)),
        greenhouse=float(_strata_mix(roi.name, LETTER_GREENHOUSE)),
        warp=_sin_params(rng, 4, (18, 70), (1.5, 4.0)), terrain=_sin_params(rng, 5, (250, 2500), (1, 25)),
        base_alt=float(rng.uniform(20, 1200)), slope=(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.02))),
        gain=rng.uniform(0.93, 1.07, 4).astype(np.float32),
        zone_offset=(float(rng.uniform(0, ZONE_M)), float(rng.uniform(0, ZONE_M))),
        s2_sig=s2_signatures(doy_s2, shift), s2_state=state, s2_cover=cover, s1_sig=s1,
    )


def build_cell(scene: RoiScene, row: int, col: int) -> CellContent:
    """Seeds and rectangles of grid cell (row, col); cells outside the ROI grid work the same."""
    rng = np.random.default_rng([scene.roi.scene_seed & 0xFFFFFFFF, scene.roi.scene_seed >> 32,
                                 row + 1000, col + 1000])
    step = PATCH_METERS / SEEDS_PER_AXIS
    u0, v0 = (col - 1) * PATCH_METERS, (row - 1) * PATCH_METERS
    grid = (np.arange(SEEDS_PER_AXIS) + 0.5) * step
    u, v = (a.ravel() for a in np.meshgrid(u0 + grid, v0 + grid))
    n = u.size
    u = u + rng.uniform(-0.4, 0.4, n) * step
    v = v + rng.uniform(-0.4, 0.4, n) * step
    cls = rng.choice(N_COSIA, size=n, p=scene.weights).astype(np.uint8)
    dominant = rng.random(n) < ZONE_SHARE
    cls[dominant] = _zone_class(scene, u[dominant], v[dominant])
    height = np.zeros(n, np.float32)
    for c, (lo, hi) in HEIGHT_RANGE.items():
        m = cls == c
        height[m] = rng.uniform(lo, hi, int(m.sum()))
    return CellContent(
        u=u.astype(np.float32), v=v.astype(np.float32), w=rng.uniform(0, 350, n).astype(np.float32),
        cls=cls, l3=_crops_for(cls, rng), bright=rng.uniform(0.88, 1.12, n).astype(np.float32),
        height=height, rects=_draw_rects(scene, u0, v0, rng),
    )


def _zone_class(scene: RoiScene, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The dominant class of the zone each point falls in: zones (~150 m, on a grid offset from
    the patch grid so their edges do not line up with patch edges) merge neighbouring cells
    into forests, fields and towns larger than one Voronoi cell."""
    zi = np.floor((u + scene.zone_offset[0]) / ZONE_M).astype(np.int64)
    zj = np.floor((v + scene.zone_offset[1]) / ZONE_M).astype(np.int64)
    out = np.empty(u.shape, np.uint8)
    for k, (a, b) in enumerate(zip(zi, zj)):
        zrng = np.random.default_rng([scene.roi.scene_seed & 0xFFFFFFFF, scene.roi.scene_seed >> 32, 7, a + 10_000, b + 10_000])
        out[k] = zrng.choice(N_COSIA, p=scene.weights)
    return out


def _draw_rects(scene: RoiScene, u0: float, v0: float, rng: np.random.Generator) -> np.ndarray:
    """Buildings (some with a pool beside them) and greenhouses anchored in one cell."""
    area = PATCH_METERS * PATCH_METERS
    rows = []
    for _ in range(rng.poisson(scene.built * area / 160.0)):
        w, d = rng.uniform(7, 22), rng.uniform(6, 16)
        u, v = u0 + rng.uniform(0, PATCH_METERS), v0 + rng.uniform(0, PATCH_METERS)
        rows.append((u, v, u + w, v + d, BUILDING, rng.uniform(3, 15), rng.uniform(0.85, 1.15)))
        if rng.random() < 0.12:
            pu, pv = u + w + rng.uniform(2, 6), v + rng.uniform(0, d)
            rows.append((pu, pv, pu + rng.uniform(3, 8), pv + rng.uniform(2.5, 5), POOL, 0.0, 1.0))
    for _ in range(rng.poisson(scene.greenhouse * area / 900.0)):
        u, v = u0 + rng.uniform(0, PATCH_METERS), v0 + rng.uniform(0, PATCH_METERS)
        rows.append((u, v, u + rng.uniform(25, 60), v + rng.uniform(8, 20), GREENHOUSE, 3.5, 1.0))
    return np.array(rows, dtype=np.float32).reshape(-1, 7)


_SCENES: dict[tuple[str, int], RoiScene] = {}
_CELLS: dict[tuple[str, int, int, int], CellContent] = {}


def scene_of(roi: RoiPlan) -> RoiScene:
    """The ROI scene, cached per process (patches of an ROI are usually rendered together)."""
    key = (roi.key, roi.scene_seed)
    if key not in _SCENES:
        if len(_SCENES) > 16:
            _SCENES.clear()
        _SCENES[key] = build_scene(roi)
    return _SCENES[key]


def cell_of(scene: RoiScene, row: int, col: int) -> CellContent:
    key = (scene.roi.key, scene.roi.scene_seed, row, col)
    if key not in _CELLS:
        if len(_CELLS) > 2048:
            _CELLS.clear()
        _CELLS[key] = build_cell(scene, row, col)
    return _CELLS[key]


def neighbourhood(scene: RoiScene, row: int, col: int) -> CellContent:
    """The 3x3 cells around (row, col), concatenated in a fixed (row, col) order so that every
    patch paints overlapping rectangles in the same order."""
    cells = [cell_of(scene, r, c) for r in (row - 1, row, row + 1) for c in (col - 1, col, col + 1)]
    return CellContent(*(np.concatenate([getattr(c, f) for c in cells]) for f in
                         ("u", "v", "w", "cls", "l3", "bright", "height", "rects")))


# --------------------------------------------------------------------------------------------
# Patch rendering
# --------------------------------------------------------------------------------------------
@dataclass
class Ground:
    """The 0.2 m ground truth of a patch, from which every modality is rendered."""

    cosia: np.ndarray  # (512, 512) uint8
    l3: np.ndarray  # (512, 512) uint8
    bright: np.ndarray  # (512, 512) float32
    height: np.ndarray  # (512, 512) float32, above terrain
    dtm: np.ndarray  # (512, 512) float32

    @property
    def l1(self) -> np.ndarray:
        return L3_TO_L1[self.l3]

    @property
    def key(self) -> np.ndarray:
        return self.cosia.astype(np.int32) * N_L1 + self.l1


def _sinsum(params: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape), np.float32)
    for kx, ky, ph, amp in params:
        out += np.float32(amp) * np.sin(np.float32(kx) * u + np.float32(ky) * v + np.float32(ph))
    return out


def render_ground(plan: PatchPlan, scene: RoiScene) -> Ground:
    size = MODALITIES["AERIAL_LABEL-COSIA"].size_px
    gsd = MODALITIES["AERIAL_LABEL-COSIA"].gsd_m
    u0 = (plan.pid.col - 1) * PATCH_METERS
    v0 = (plan.pid.row - 1) * PATCH_METERS
    axis = ((np.arange(size, dtype=np.float32) + 0.5) * gsd)
    u = (u0 + axis)[None, :]
    v = (v0 + axis)[:, None]
    wu = u + _sinsum(scene.warp[:2], u, v)
    wv = v + _sinsum(scene.warp[2:], u, v)
    cells = neighbourhood(scene, plan.pid.row, plan.pid.col)
    near = np.flatnonzero(
        (cells.u > u0 - QUERY_MARGIN_M) & (cells.u < u0 + PATCH_METERS + QUERY_MARGIN_M)
        & (cells.v > v0 - QUERY_MARGIN_M) & (cells.v < v0 + PATCH_METERS + QUERY_MARGIN_M)
    )
    best = np.full((size, size), np.inf, np.float32)
    idx = np.zeros((size, size), np.int32)
    for i in near:  # ~60 seeds per patch, each one vectorised over the 512x512 grid
        d = (wu - cells.u[i]) ** 2 + (wv - cells.v[i]) ** 2 - cells.w[i]
        closer = d < best
        best = np.where(closer, d, best)
        idx[closer] = i
    cosia = cells.cls[idx]
    l3 = cells.l3[idx]
    bright = cells.bright[idx]
    height = cells.height[idx]
    r = cells.rects
    hits = (r[:, 2] > u0) & (r[:, 0] < u0 + PATCH_METERS) & (r[:, 3] > v0) & (r[:, 1] < v0 + PATCH_METERS)
    for ru0, rv0, ru1, rv1, cls, h, b in r[hits]:  # later rectangles paint over earlier ones
        c0, c1 = int(np.floor((ru0 - u0) / gsd)), int(np.ceil((ru1 - u0) / gsd))
        r0, r1 = int(np.floor((rv0 - v0) / gsd)), int(np.ceil((rv1 - v0) / gsd))
        c0, c1, r0, r1 = max(c0, 0), min(c1, size), max(r0, 0), min(r1, size)
        if c0 >= c1 or r0 >= r1:
            continue
        cosia[r0:r1, c0:c1] = int(cls)
        l3[r0:r1, c0:c1] = BG3
        bright[r0:r1, c0:c1] = b
        height[r0:r1, c0:c1] = h
    dtm = (np.float32(scene.base_alt) + np.float32(scene.slope[0]) * u + np.float32(scene.slope[1]) * v
           + _sinsum(scene.terrain, u, v))
    return Ground(cosia, l3, bright, height, dtm.astype(np.float32))


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a.reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean(axis=(1, 3))


def _blur(a: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication."""
    p = np.pad(a, 1, mode="edge")
    a = (p[:-2, 1:-1] + 2 * p[1:-1, 1:-1] + p[2:, 1:-1]) / 4
    p = np.pad(a, 1, mode="edge")
    return (p[1:-1, :-2] + 2 * p[1:-1, 1:-1] + p[1:-1, 2:]) / 4


def _key_fractions(key: np.ndarray, out_px: int) -> np.ndarray:
    """(out_px*out_px, N_KEYS) share of each ground key in every coarse pixel.

    512 px do not divide into 10 (10.24 m pixels), so the 0.2 m map is point-sampled on a
    16x finer grid of the coarse pixels before counting.
    """
    sub = 16
    n = out_px * sub
    pos = ((np.arange(n) + 0.5) * key.shape[0] / n).astype(np.int64)
    samples = key[np.ix_(pos, pos)]
    block = (np.arange(n) // sub)
    pix = block[:, None] * out_px + block[None, :]
    counts = np.bincount((pix * N_KEYS + samples).ravel(), minlength=out_px * out_px * N_KEYS)
    return counts.reshape(out_px * out_px, N_KEYS).astype(np.float32) / (sub * sub)


def _smooth_field(rng: np.random.Generator, px: int) -> np.ndarray:
    return _blur(_blur(rng.random((px, px)).astype(np.float32)))


def render_patch(plan: PatchPlan, seed: int) -> dict[str, np.ndarray]:
    """Every modality of `plan`, as (bands, H, W) arrays of the schema dtype."""
    scene = scene_of(plan.roi)
    rng = rng_for(seed, "patch", plan.patch_id)
    g = render_ground(plan, scene)
    want = set(plan.modalities)
    out: dict[str, np.ndarray] = {}
    l1 = g.l1
    out["AERIAL_LABEL-COSIA"] = g.cosia[None]
    out["ALL_LABEL-LPIS"] = np.stack([l1, L3_PARENT[g.l3], g.l3])

    mean = (AERIAL_RGBI[g.cosia] + CROP_AERIAL_OFFSET[l1]) * g.bright[..., None]
    if "AERIAL_RGBI" in want:
        tex = rng.standard_normal(mean.shape, dtype=np.float32) * AERIAL_TEXTURE[g.cosia][..., None]
        out["AERIAL_RGBI"] = np.clip((mean + tex) * scene.gain, 0, 255).round().astype(np.uint8).transpose(2, 0, 1)
    if "DEM_ELEV" in want:
        rough = np.abs(rng.standard_normal(g.height.shape, dtype=np.float32)) * 0.15 * np.minimum(g.height, 5)
        dsm = g.dtm + g.height + rough  # both terms >= 0, so DSM >= DTM everywhere
        out["DEM_ELEV"] = np.stack([dsm, g.dtm]).astype(np.float32)
    if "AERIAL-RLT_PAN" in want:
        # 1950s film: a grey, grainy and blurred rendering of the same ground at 0.4 m.
        grey = mean[..., :3].mean(-1) * 0.9 + 15 + rng.standard_normal(g.cosia.shape, dtype=np.float32) * 14
        pan = _blur(_blur(_block_mean(grey, 2)))
        out["AERIAL-RLT_PAN"] = np.clip(pan, 0, 255).round().astype(np.uint8)[None]
    if "SPOT_RGBI" in want:
        spot = _block_mean(mean * SPOT_GAIN, MODALITIES["AERIAL_RGBI"].size_px // MODALITIES["SPOT_RGBI"].size_px)
        spot = spot + 60 + rng.standard_normal(spot.shape, dtype=np.float32) * 25
        out["SPOT_RGBI"] = np.clip(spot, 1, 10000).round().astype(np.uint16).transpose(2, 0, 1)
    sentinel = [m for m in ("SENTINEL2_TS", "SENTINEL2_MSK-SC", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS") if m in want]
    if sentinel:
        px = MODALITIES["SENTINEL2_TS"].size_px
        frac = _key_fractions(g.key, px)
        used = np.flatnonzero(frac.sum(0))
        frac = frac[:, used]
        if "SENTINEL2_TS" in want or "SENTINEL2_MSK-SC" in want:
            s2, msk = _render_s2(frac, scene.s2_sig[used], scene, rng, px)
            if "SENTINEL2_TS" in want:
                out["SENTINEL2_TS"] = s2
            if "SENTINEL2_MSK-SC" in want:
                out["SENTINEL2_MSK-SC"] = msk
        for s in ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"):
            if s in want:
                out[s] = _render_s1(frac, scene.s1_sig[s][used], rng, px)
    return {m: out[m] for m in plan.modalities}


def _render_s2(frac: np.ndarray, sig: np.ndarray, scene: RoiScene, rng: np.random.Generator,
               px: int) -> tuple[np.ndarray, np.ndarray]:
    t = sig.shape[1]
    refl = (frac @ sig.reshape(sig.shape[0], -1)).reshape(px, px, t, 10)
    refl *= rng.normal(1.0, 0.03, (px, px, 1, 1)).astype(np.float32)
    refl += rng.normal(0, 40, refl.shape).astype(np.float32)
    cloud = np.zeros((t, px, px), np.float32)
    snow = np.zeros((t, px, px), np.float32)
    for i in range(t):
        field = _smooth_field(rng, px)
        state, cover = int(scene.s2_state[i]), float(scene.s2_cover[i])
        if state in (0, 1):
            # Clear or thin haze: a few pixels above 1, never enough to fail the 95 % rule.
            n_hit = int(round(cover * px * px)) if state == 1 else 0
            noisy = rng.integers(0, 2, (px, px)).astype(np.float32)
            if n_hit:
                noisy.ravel()[rng.permutation(px * px)[:n_hit]] = rng.uniform(5, 40, n_hit)
            cloud[i] = noisy
        else:
            inside = field >= np.quantile(field, 1.0 - cover)
            values = np.where(inside, rng.uniform(55, 100, (px, px)), rng.uniform(2, 20, (px, px)))
            (snow if state == 3 else cloud)[i] = values
    a_cloud = (cloud / 100.0 * 0.9).transpose(1, 2, 0)[..., None]
    a_snow = (snow / 100.0 * 0.9).transpose(1, 2, 0)[..., None]
    refl = refl * (1 - a_cloud - a_snow) + a_cloud * _CLOUD + a_snow * _SNOWS
    s2 = np.clip(refl, 1, 10000).round().astype(np.uint16).reshape(px, px, t * 10).transpose(2, 0, 1)
    msk = np.stack([snow, cloud], axis=1).reshape(2 * t, px, px)
    return np.ascontiguousarray(s2), np.clip(msk, 0, 100).round().astype(np.uint8)


def _render_s1(frac: np.ndarray, sig: np.ndarray, rng: np.random.Generator, px: int) -> np.ndarray:
    t = sig.shape[1]
    sigma0 = (frac @ sig.reshape(sig.shape[0], -1)).reshape(px, px, t * 2)
    looks = 5.0  # multi-looked speckle: gamma with mean 1
    sigma0 = sigma0 * rng.gamma(looks, 1.0 / looks, sigma0.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(sigma0, 1e-4, 1.0).astype(np.float32).transpose(2, 0, 1))
