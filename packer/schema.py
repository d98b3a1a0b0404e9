"""The one source of truth for FLAIR-HUB facts.

Everything that knows a modality name, a dtype, a band layout, a class table, a metadata file
name or the patch-id grammar imports it from here (the shard format built on them, member names,
encoding and index columns, is `packer.shardformat`): the synthetic generator
(`tools.flair_toy`), the packer, the loader, the model and inference. The facts come from the
FLAIR-HUB dataset card (Hugging Face Hub, `IGNF/FLAIR-HUB`) and the reference code's README; where
they do not say (SPOT/S2 uint16, mask uint8, S1 float32, historical 256 px) we follow the files.

Each `Modality` also carries the rules the loader, the model and inference apply to it (a series
or not, its mask, its dates file, the channels it yields after preprocessing), so that adding a
modality is one entry here: see "Adding a modality" in docs/packing.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------
# Geometry shared by every modality of a patch
# --------------------------------------------------------------------------------------------
PATCH_METERS = 102.4
"""Every modality of a patch covers the same 102.4 m x 102.4 m square (EPSG:2154)."""

CRS_EPSG = 2154
"""Lambert-93."""

HISTORICAL_YEAR_TOKEN = "195X"
"""The historical panchromatic folders and files carry this literal instead of the year."""

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Modality:
    """One FLAIR-HUB file modality (one GeoTIFF per patch).

    `bands_per_date` is the band count of a mono-temporal file, or the band count of one date of
    a time series, whose file holds `bands_per_date * T` bands in date-major order
    (band index = t * bands_per_date + b).
    """

    name: str  # folder suffix, used verbatim in folder names, file names and shard members
    size_px: int
    gsd_m: float
    dtype: str
    bands_per_date: int
    band_names: tuple[str, ...]
    time_series: bool = False
    label: bool = False
    historical: bool = False  # year token is `195X` in folder and file names
    dates_file: str | None = None  # GLOBAL_ALL_MTD file holding this modality's dates
    value_range: tuple[float, float] | None = None  # documented range, for generators/checks
    description: str = ""
    # How the reference's loader and model treat it (the rules every stage asks about):
    mask_of: str | None = None
    """The series this modality masks (the S2 snow/cloud mask): it shares that series' dates and
    is read only to filter it, never fed to the model."""
    channels_required: bool = False
    """The reference sizes this input's encoder with `len(inputs_channels[name])`, so a config
    enabling it must list its 1-based channels (PAN and DEM have fixed channel counts)."""
    elevation: bool = False
    """DEM rule: `inputs_channels` is ignored (both bands are read); `calc_elevation` turns DSM/DTM
    into a height band, stacked on the DSM with `calc_elevation_stack_dsm` (see `output_channels`)."""
    temporal_average_key: str | None = None
    """The reference's `pre_processings` key that sets this series' temporal averaging."""

    @property
    def year_token_rule(self) -> str:
        return HISTORICAL_YEAR_TOKEN if self.historical else "YYYY"

    def year_token(self, year: int | str) -> str:
        """The token that stands for `year` in this modality's folder and file names."""
        return HISTORICAL_YEAR_TOKEN if self.historical else f"{int(year):04d}"

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def n_bands(self, n_dates: int | None = None) -> int:
        """Bands in the file: fixed for mono-temporal modalities, `bands_per_date * T` for series."""
        if not self.time_series:
            return self.bands_per_date
        if n_dates is None:
            raise ValueError(f"{self.name} is a time series: the number of dates is needed")
        return self.bands_per_date * n_dates

    @property
    def shape_hw(self) -> tuple[int, int]:
        return (self.size_px, self.size_px)

    @property
    def mono_temporal_input(self) -> bool:
        return not self.time_series and not self.label

    @property
    def series_input(self) -> bool:
        """A time series fed to a U-TAE branch (a series mask is auxiliary, not an input)."""
        return self.time_series and not self.label and self.mask_of is None

    @property
    def dates_from(self) -> str:
        """The modality whose acquisition dates apply to this one (its own, or its series')."""
        return self.mask_of or self.name

    @property
    def mask(self) -> str | None:
        """The modality that masks this series (SENTINEL2_TS -> SENTINEL2_MSK-SC), if any."""
        return next((m.name for m in MODALITY_LIST if m.mask_of == self.name), None)

    @property
    def selects_channels(self) -> bool:
        """Whether `inputs_channels` (zonal: `channels`) picks this input's bands."""
        return not self.elevation

    def output_channels(self, channels: Sequence[int] | None = None, *, calc_elevation: bool = False,
                        stack_dsm: bool = False) -> int:
        """Channels (per date for a series) of the preprocessed tensor the model's encoder sees.

        `channels` are the selected 1-based bands (None or empty: all of them); for the DEM the
        count follows the elevation switches instead.
        """
        if self.elevation:
            return 1 if calc_elevation and not stack_dsm else 2
        return len(channels) if channels else self.bands_per_date

    def layout_problems(self, shape: tuple[int, ...], dtype: object, n_dates: int | None = None) -> list[str]:
        """How an array read for this modality differs from the schema (`layout_problems`)."""
        return layout_problems(shape, dtype, name=self.name, dtype_expected=self.dtype,
                               bands_per_date=self.bands_per_date, size_px=self.size_px,
                               time_series=self.time_series, n_dates=n_dates, band_names=self.band_names)


def layout_problems(shape: tuple[int, ...], dtype: object, *, name: str, dtype_expected: str, bands_per_date: int,
                    size_px: int, time_series: bool, n_dates: int | None = None,
                    band_names: Iterable[str] = ()) -> list[str]:
    """How an array `(bands, H, W)` of modality `name` differs from its facts, one phrase per problem
    with what was found and what was expected (empty when it fits).

    The one rule for both ends: the packer checks every source GeoTIFF with it (from the schema)
    and `flair-pack verify` every member (from the manifest's copy of the schema), so nothing with
    the wrong size, dtype or band count is packed, nor passes verification later.
    """
    problems = []
    if len(shape) != 3:
        return [f"wrong shape: {list(shape)}, expected (bands, {size_px}, {size_px}) ({name})"]
    bands, h, w = shape
    if (h, w) != (size_px, size_px):
        problems.append(f"wrong pixel size: {h}x{w} px, expected {size_px}x{size_px} ({name})")
    if str(np.dtype(dtype)) != dtype_expected:
        problems.append(f"wrong dtype: {np.dtype(dtype)}, expected {dtype_expected} ({name})")
    if time_series and n_dates is not None and bands != bands_per_date * n_dates:
        problems.append(f"wrong band count: {bands} bands, but {n_dates} dates x {bands_per_date} bands per date "
                        f"= {bands_per_date * n_dates} expected")
    elif time_series and bands % bands_per_date:
        problems.append(f"wrong band count: {bands} bands, not a multiple of {bands_per_date} bands per date")
    elif not time_series and bands != bands_per_date:
        names = f" ({', '.join(band_names)})" if band_names else ""
        problems.append(f"wrong band count: {bands}, expected {bands_per_date}{names}")
    return problems


MODALITY_LIST: tuple[Modality, ...] = (
    Modality(
        "AERIAL_RGBI", 512, 0.2, "uint8", 4, ("R", "G", "B", "NIR"),
        dates_file="GLOBAL_AERIAL_MTD_DATES.gpkg", value_range=(0, 255), channels_required=True,
        description="BD ORTHO aerial imagery, 20 cm",
    ),
    Modality(
        "AERIAL-RLT_PAN", 256, 0.4, "uint8", 1, ("PAN",), historical=True,
        dates_file="GLOBAL_AERIAL-RLT_MTD_DATES.gpkg", value_range=(0, 255),
        description="BD ORTHO Historique panchromatic (1947-1965), resampled to 40 cm",
    ),
    Modality(
        "DEM_ELEV", 512, 0.2, "float32", 2, ("DSM", "DTM"), value_range=(-100.0, 4900.0), elevation=True,
        description="elevation: surface and terrain models in metres",
    ),
    Modality(
        "SPOT_RGBI", 64, 1.6, "uint16", 4, ("R", "G", "B", "NIR"),
        dates_file="GLOBAL_SPOT_MTD_DATES.gpkg", value_range=(0, 10000), channels_required=True,
        description="SPOT 6-7 calibrated reflectance, resampled to 1.6 m",
    ),
    Modality(
        "SENTINEL2_TS", 10, 10.24, "uint16", 10,
        ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        time_series=True, dates_file="GLOBAL_SENTINEL2_MTD_DATES.gpkg", value_range=(0, 10000),
        channels_required=True, temporal_average_key="temporal_average_sentinel2",
        description="Sentinel-2 L2A yearly series, reflectance x 1e4, date-major",
    ),
    Modality(
        "SENTINEL2_MSK-SC", 10, 10.24, "uint8", 2, ("snow", "cloud"), time_series=True,
        dates_file="GLOBAL_SENTINEL2_MTD_DATES.gpkg", value_range=(0, 100), mask_of="SENTINEL2_TS",
        description="Sentinel-2 snow and cloud probabilities (0-100), same dates as SENTINEL2_TS",
    ),
    Modality(
        "SENTINEL1-ASC_TS", 10, 10.24, "float32", 2, ("VV", "VH"), time_series=True,
        dates_file="GLOBAL_SENTINEL1-ASC_MTD_DATES.gpkg", value_range=(0.0, 1.0),
        channels_required=True, temporal_average_key="temporal_average_sentinel1",
        description="Sentinel-1 ascending orbit, linear sigma0 backscatter, date-major",
    ),
    Modality(
        "SENTINEL1-DESC_TS", 10, 10.24, "float32", 2, ("VV", "VH"), time_series=True,
        dates_file="GLOBAL_SENTINEL1-DESC_MTD_DATES.gpkg", value_range=(0.0, 1.0),
        channels_required=True, temporal_average_key="temporal_average_sentinel1",
        description="Sentinel-1 descending orbit, linear sigma0 backscatter, date-major",
    ),
    Modality(
        "AERIAL_LABEL-COSIA", 512, 0.2, "uint8", 1, ("cosia",), label=True, value_range=(0, 18),
        description="CoSIA land-cover label, 19 classes (0-18)",
    ),
    Modality(
        "ALL_LABEL-LPIS", 512, 0.2, "uint8", 3, ("lpis_level1", "lpis_level2", "lpis_level3"),
        label=True, value_range=(0, 45),
        description="LPIS crop-type label, three levels: 23, 31 and 46 classes",
    ),
)

MODALITIES: dict[str, Modality] = {m.name: m for m in MODALITY_LIST}
MODALITY_NAMES: tuple[str, ...] = tuple(MODALITIES)
INPUT_MODALITIES = tuple(m.name for m in MODALITY_LIST if not m.label)
MONO_TEMPORAL_INPUTS = tuple(m.name for m in MODALITY_LIST if m.mono_temporal_input)
TIME_SERIES_INPUTS = tuple(m.name for m in MODALITY_LIST if m.series_input)
"""Series fed to a U-TAE branch (the S2 mask is an auxiliary of SENTINEL2_TS, not an input)."""
TIME_SERIES_MODALITIES = tuple(m.name for m in MODALITY_LIST if m.time_series)
LABEL_MODALITIES = tuple(m.name for m in MODALITY_LIST if m.label)
SENTINEL2_MASK_OF = {m.name: m.mask_of for m in MODALITY_LIST if m.mask_of}
"""Series that share another series' dates."""


def modality(name: str) -> Modality:
    """Look a modality up by its folder-suffix name, with an error that lists the valid ones."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; expected one of {', '.join(MODALITY_NAMES)}") from None


def dates_key(name: str) -> str:
    """The series whose acquisition dates apply to `name` (the S2 mask uses SENTINEL2_TS's)."""
    return MODALITIES[name].dates_from if name in MODALITIES else name


SERIES_SUFFIX = "_TS"
"""The name suffix of a series; the reference's batch keys swap it (`SENTINEL2_TS` -> `SENTINEL2_DATES`)."""


def batch_dates_key(series: str) -> str:
    """Batch key of a series' day offsets, the reference's name: `SENTINEL2_TS` -> `SENTINEL2_DATES`."""
    return series.replace(SERIES_SUFFIX, "_DATES")


def batch_pad_mask_key(series: str) -> str:
    """Batch key of a series' padding mask (True where a date is padding, U-TAE's convention)."""
    return series.replace(SERIES_SUFFIX, "_PAD_MASK")


# --------------------------------------------------------------------------------------------
# Class tables (seed README: value, name, official colour)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _table(rows: Iterable[tuple[str, str]]) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(rows))


COSIA_CLASSES = _table([
    ("building", "#db0e9a"), ("greenhouse", "#9999ff"), ("swimming_pool", "#3de6eb"),
    ("impervious surface", "#f80c00"), ("pervious surface", "#938e7b"), ("bare soil", "#a97101"),
    ("water", "#1553ae"), ("snow", "#ffffff"), ("herbaceous vegetation", "#55ff00"),
    ("agricultural land", "#fff30d"), ("plowed land", "#e4df7c"), ("vineyard", "#660082"),
    ("deciduous", "#46e483"), ("coniferous", "#194a26"), ("brushwood", "#f3a60d"),
    ("clear cut", "#8ab3a0"), ("ligneous", "#c5dc42"), ("mixed", "#6b714f"),
    ("undefined", "#000000"),
])

LPIS_L1_CLASSES = _table([
    ("Grasses", "#92d050"), ("Wheat", "#d7e600"), ("Barley", "#e0e000"), ("Maize", "#fff100"),
    ("Other cereals", "#ffff00"), ("Rice", "#e8e8e8"), ("Hemp/Flax/Tobacco", "#dceaf7"),
    ("Sunflower", "#d29ead"), ("Rapeseed", "#d29ed0"), ("Other oilseed crops", "#ffbe99"),
    ("Soy", "#ffc000"), ("Other protein crops", "#ff9000"), ("Fodder legumes", "#009999"),
    ("Beetroots", "#808000"), ("Potatoes", "#a7a700"), ("Other arable crops", "#89896d"),
    ("Vineyard", "#f2cfee"), ("Olive groves", "#6f6633"), ("Fruit orchards", "#ac8141"),
    ("Nut orchards", "#996633"), ("Other permanent crops", "#80c1d7"), ("Mixed crops", "#000000"),
    ("Background", "#000000"),
])

LPIS_LEVEL_CLASS_COUNTS = (23, 31, 46)
"""Classes per LPIS band (level 1, 2, 3); the last class of each level is background."""

CLASS_TABLES: dict[str, tuple[ClassInfo, ...]] = {
    "AERIAL_LABEL-COSIA": COSIA_CLASSES,
    "ALL_LABEL-LPIS": LPIS_L1_CLASSES,
}
N_CLASSES = {name: len(table) for name, table in CLASS_TABLES.items()}


def official_classes(task: str, n_classes: int) -> tuple[ClassInfo, ...] | None:
    """`task`'s official class table (names, colours) when its `n_classes` classes are that table;
    None otherwise (LPIS levels 2 and 3, or a remapped nomenclature, have no official colours).
    The one rule every picture and written class map follows."""
    table = CLASS_TABLES.get(task)
    return table if table is not None and len(table) == n_classes else None

# --------------------------------------------------------------------------------------------
# GLOBAL_ALL_MTD
# --------------------------------------------------------------------------------------------
GLOBAL_MTD_FOLDER = "GLOBAL_ALL_MTD"
SENTINEL_DATES_FILES = {m.name: m.dates_file for m in MODALITY_LIST
                        if m.time_series and m.dates_file and m.dates_from == m.name}
"""Series -> its `acquisition_dates` GeoPackage (a mask uses its series' file: `dates_key`)."""
SINGLE_DATE_FILES = {m.name: m.dates_file for m in MODALITY_LIST if not m.time_series and m.dates_file}
"""Mono-temporal modality -> its single-`date` GeoPackage."""
SPLIT_FILE = "GLOBAL_ALL_MTD_SPLIT.gpkg"
GEOM_FILE = "GLOBAL_ALL_MTD_GEOM.gpkg"
SPLIT_COLUMNS = ("split_1", "split_2", "split_3", "split_4", "split_5", "split_flairchallenge", "split_toy")
"""Split columns seen in the real split GeoPackage; `split_1` is the official split."""
ACQUISITION_DATES_COLUMN = "acquisition_dates"  # JSON object {"1": "YYYYMMDD", ...}
SINGLE_DATE_COLUMN = "date"  # "YYYYMMDD" (day may be 00)
GLOBAL_MTD_FILES = (*SENTINEL_DATES_FILES.values(), *SINGLE_DATE_FILES.values(), SPLIT_FILE, GEOM_FILE)

SPLIT_CSV_NAMES = {s: f"FLAIR-HUB_TOY-DATASET_{s.upper()}.csv" for s in SPLITS}
SPLIT_CSV_COLUMNS = ("patch_id", *sorted(MODALITY_NAMES))
"""Official split CSV header: `patch_id` then the modalities in alphabetical order."""

# --------------------------------------------------------------------------------------------
# Patch ids and paths
# --------------------------------------------------------------------------------------------
_DOMAIN = r"D\d{3}(?:\d{3})?"
_ROI = r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"  # no '_' and no '.' (the reference splits on '_')
PATCH_ID_RE = re.compile(rf"^(?P<domain>{_DOMAIN})-(?P<year>\d{{4}})_(?P<roi>{_ROI})_(?P<row>\d+)-(?P<col>\d+)$")
_MOD_ALT = "|".join(re.escape(n) for n in sorted(MODALITY_NAMES, key=len, reverse=True))
FILE_NAME_RE = re.compile(
    rf"^(?P<domain>{_DOMAIN})-(?P<year>\d{{4}}|{HISTORICAL_YEAR_TOKEN})_(?P<modality>{_MOD_ALT})"
    rf"_(?P<roi>{_ROI})_(?P<row>\d+)-(?P<col>\d+)\.tif$"
)
FOLDER_NAME_RE = re.compile(rf"^(?P<domain>{_DOMAIN})-(?P<year>\d{{4}}|{HISTORICAL_YEAR_TOKEN})_(?P<modality>{_MOD_ALT})$")


@dataclass(frozen=True, order=True)
class PatchId:
    """`<DOMAIN>-<YEAR>_<ROI>_<R>-<C>`, e.g. `D006-2020_FF-S1-14_5-5` (R, C are 1-based)."""

    domain: str
    year: int
    roi: str
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.year:04d}_{self.roi}_{self.row}-{self.col}"

    @property
    def domain_year(self) -> str:
        return f"{self.domain}-{self.year:04d}"

    @property
    def location_key(self) -> tuple[str, str, int, int]:
        """What a historical file name identifies (its year token is 195X, not the year)."""
        return (self.domain, self.roi, self.row, self.col)

    @classmethod
    def parse(cls, text: str) -> "PatchId":
        m = PATCH_ID_RE.match(text)
        if not m:
            raise ValueError(
                f"not a FLAIR-HUB patch id: {text!r} (expected <DOMAIN>-<YEAR>_<ROI>_<R>-<C>, "
                "e.g. D006-2020_FF-S1-14_5-5)"
            )
        return cls(m["domain"], int(m["year"]), m["roi"], int(m["row"]), int(m["col"]))

    def folder_name(self, modality_name: str) -> str:
        mod = modality(modality_name)
        return f"{self.domain}-{mod.year_token(self.year)}_{mod.name}"

    def file_name(self, modality_name: str) -> str:
        return f"{self.folder_name(modality_name)}_{self.roi}_{self.row}-{self.col}.tif"

    def relative_path(self, modality_name: str) -> PurePosixPath:
        """Path of this patch's file for `modality_name`, relative to the dataset root."""
        return PurePosixPath(self.folder_name(modality_name), self.roi, self.file_name(modality_name))

    def csv_path(self, modality_name: str) -> str:
        """The form used in the official split CSVs: `../<relative path>`."""
        return f"../{self.relative_path(modality_name)}"


@dataclass(frozen=True)
class ParsedFile:
    """A FLAIR-HUB file name taken apart. `year` is None for historical (`195X`) files."""

    domain: str
    year: int | None
    modality: str
    roi: str
    row: int
    col: int

    @property
    def location_key(self) -> tuple[str, str, int, int]:
        return (self.domain, self.roi, self.row, self.col)

    def patch_id(self, year: int | None = None) -> PatchId:
        y = self.year if self.year is not None else year
        if y is None:
            raise ValueError(f"historical file of {self.location_key} needs the patch year from another modality")
        return PatchId(self.domain, y, self.roi, self.row, self.col)


def parse_file_name(name: str) -> ParsedFile:
    """Parse `<DOMAIN>-<YEAR|195X>_<MODALITY>_<ROI>_<R>-<C>.tif` (a bare name or a path)."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    m = FILE_NAME_RE.match(base)
    if not m:
        raise ValueError(f"not a FLAIR-HUB patch file name: {base!r}")
    mod = MODALITIES[m["modality"]]
    year_tok = m["year"]
    if (year_tok == HISTORICAL_YEAR_TOKEN) != mod.historical:
        raise ValueError(f"{base!r}: year token {year_tok!r} does not fit modality {mod.name} ({mod.year_token_rule})")
    year = None if mod.historical else int(year_tok)
    return ParsedFile(m["domain"], year, mod.name, m["roi"], int(m["row"]), int(m["col"]))


def parse_folder_name(name: str) -> tuple[str, int | None, str]:
    """Parse a modality folder `<DOMAIN>-<YEAR|195X>_<MODALITY>` into (domain, year, modality)."""
    m = FOLDER_NAME_RE.match(name)
    if not m:
        raise ValueError(f"not a FLAIR-HUB modality folder: {name!r}")
    year = None if m["year"] == HISTORICAL_YEAR_TOKEN else int(m["year"])
    return m["domain"], year, m["modality"]


# --------------------------------------------------------------------------------------------
# The files of a pack (docs/packing.md, "Output layout"); what is inside a shard and the index
# columns: packer.shardformat
# --------------------------------------------------------------------------------------------
INDEX_FILE = "index.parquet"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
"""The dataset card (Hugging Face format) written beside the index: `packer.card`."""


def shard_name(split: str, number: int) -> str:
    """Relative path of shard `number` of `split`: `<split>/<split>-NNNNNN.tar`."""
    return f"{split}/{split}-{number:06d}.tar"


# --------------------------------------------------------------------------------------------
# Domains (the dataset card's domain table and official split 1)
# --------------------------------------------------------------------------------------------
DOMAIN_YEARS: dict[str, tuple[int, ...]] = {
    "D004": (2021,), "D005": (2018,), "D006": (2020,), "D007": (2020,), "D008": (2019,),
    "D009": (2019,), "D010": (2019,), "D011": (2021,), "D012": (2019,), "D013": (2020,),
    "D014": (2020,), "D015": (2020,), "D016": (2020,), "D017": (2018, 2021), "D018": (2020,),
    "D020": (2019,), "D021": (2020,), "D022": (2021,), "D023": (2020,), "D024047": (2021,),
    "D025039": (2020,), "D026": (2020,), "D029": (2021,), "D030": (2021,), "D031": (2019,),
    "D032": (2019,), "D033": (2018, 2021), "D034": (2021,), "D035": (2020,), "D036": (2020,),
    "D037": (2021,), "D038": (2021,), "D040": (2021,), "D041": (2021,), "D044": (2020, 2022),
    "D045": (2020,), "D046": (2019,), "D049": (2020,), "D051": (2019,), "D052": (2019,),
    "D054057": (2018,), "D055": (2018,), "D056": (2019,), "D058": (2020,), "D059062": (2021,),
    "D060": (2021,), "D061": (2020,), "D063": (2019,), "D064": (2021,), "D065": (2019,),
    "D066": (2021,), "D067": (2021,), "D068": (2021,), "D069": (2020,), "D070": (2020,),
    "D071": (2020,), "D072": (2019,), "D073": (2022,), "D074": (2020,), "D075": (2021,),
    "D076": (2019,), "D077": (2021,), "D078": (2021,), "D080": (2017, 2021), "D081": (2020,),
    "D083": (2020,), "D084": (2021,), "D085": (2019,), "D086": (2020,), "D091": (2021,),
}
"""The 70 domain codes and their aerial years (74 domain-years); multi-year domains share one 195X folder."""

OFFICIAL_TEST_DOMAINS: tuple[str, ...] = (
    "D012", "D015", "D022", "D026", "D036", "D061", "D064", "D068",
    "D069", "D071", "D073", "D075", "D076", "D083", "D084", "D085",
)
"""Domains held out as `test` in the official split 1 (train/valid is random among the others)."""


_MOVED_TO_SHARD_FORMAT = ("FORMAT_VERSION", "ARRAY_SUFFIX", "META_SUFFIX", "member_name", "meta_member_name",
                          "member_key", "WDS_LOWERCASES_KEYS", "wds_member_key")
"""Member names and the format version live in `packer.shardformat.names` (the shard format's own
package); they were documented here (`packer.schema.wds_member_key`, `FORMAT_VERSION`), so this
module still answers for them, on first use (that package imports this one)."""


def __getattr__(name: str):
    if name in _MOVED_TO_SHARD_FORMAT:
        from packer.shardformat import names

        return getattr(names, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
