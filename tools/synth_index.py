"""A full-size FLAIR-HUB index + manifest without a single pixel: 241,100 rows over ~1,000 shards.

    python -m tools.synth_index --out /tmp/flair-hub-index            # index.parquet + manifest.json
    python -m tools.synth_index --out DIR --calibrate-from shards/     # member sizes from a real pack

What `flair-pack` would write for the whole of FLAIR-HUB, so that opening the catalog, selecting
and planning epochs (`tools/bench_index.py`) and the simulator (`flair-simulate`) can be measured
at full scale on a laptop. Only the shards themselves are missing.

Where the figures come from (the FLAIR-HUB dataset card and its split and metadata files):
- split 1 sizes: train 152,225 / valid 38,175 / test 50,700; test = the 16 official test
  domains, train/valid at random among the other domain-years (`packer.schema.DOMAIN_YEARS`);
- 2,822 ROIs, ROI names of the official grammar (`tools.toy.plan.roi_names`), patches of an
  ROI on a contiguous R-C grid, patch ids built and checked by `packer.schema.PatchId`;
- T per ROI: S2 uniform in [32, 150] (mean 91, the published 256,221 acquisitions / 2,822 ROIs),
  S1 per orbit uniform in [38, 150] (mean 94);
- member sizes: the raw `.npy` size of each modality from the schema (bands x T x px^2 x dtype) times
  a compression ratio per modality, with +-10 % log-normal spread. The built-in ratios were measured
  on a `flair-toy` pack (48 patches, byte-shuffle + zstd 3, the packer's defaults); `--calibrate-from`
  measures them on any packed dataset instead. Toy labels compress far better than real ones
  (about 1 % of raw), so label members here are probably too small; aerial and DEM dominate anyway.
- tar layout: the packer's own header sizes (`packer.shardformat.writer.member_header`) and 512-byte padding;
  shards filled in the packer's shuffled order up to a byte target (total / `--target-shards`).

The manifest is the packer's (`packer.pack._finalise` layout) with `parameters.synthetic: true`;
shard sha256 values are placeholders (sha256 of the shard path), since no shard exists.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from packer import schema
from packer.index import write_index
from packer.manifest import file_sha256, json_text, modality_table, packer_version
from packer.shardformat.columns import COUNT_COLUMNS, INDEX_SCHEMA, checksum_column, dates_column, member_columns
from packer.shardformat.encoding import manifest_codec
from packer.shardformat.names import FORMAT_VERSION, META_SUFFIX, any_member_name
from packer.shardformat.writer import BLOCK, END_OF_ARCHIVE, member_header
from tools.toy.plan import roi_names

SPLIT_SIZES = {"train": 152_225, "valid": 38_175, "test": 50_700}
"""Official split 1 (`split_1` of GLOBAL_ALL_MTD_SPLIT.gpkg)."""
N_ROIS = 2_822
T_RANGES = {"SENTINEL2_TS": (32, 150), "SENTINEL1-ASC_TS": (38, 150), "SENTINEL1-DESC_TS": (38, 150)}
PIXEL_COUNT = 512 * 512
SOURCE_BYTES_PER_PATCH = 750e9 / 241_100
"""The published ~750 GB of GeoTIFFs over 241,100 patches (per-patch `source_bytes` of the index)."""

TOY_RATIOS = {
    "AERIAL_RGBI": 0.833, "AERIAL-RLT_PAN": 0.505, "DEM_ELEV": 0.435, "SPOT_RGBI": 0.728,
    "SENTINEL2_TS": 0.859, "SENTINEL2_MSK-SC": 0.230, "SENTINEL1-ASC_TS": 0.904, "SENTINEL1-DESC_TS": 0.904,
    "AERIAL_LABEL-COSIA": 0.011, "ALL_LABEL-LPIS": 0.007,
}
"""Member bytes / raw `.npy` bytes per modality with the default per-modality zstd settings (shard
format 2), measured by `python -m tools.bench_formats`'s member-encoding table on a toy tree laid
out like the real files (docs/packing.md); `SizeModel.measured` takes them from a real pack."""
TOY_JSON = (3220.0, 13.27)
"""`<patch_id>.json` bytes = a + b x (T_S2 + T_S1-ASC + T_S1-DESC): a least-squares fit on that pack."""


@dataclass
class SizeModel:
    """How many bytes a member takes in a shard."""

    ratios: dict[str, float] = field(default_factory=lambda: dict(TOY_RATIOS))
    json: tuple[float, float] = TOY_JSON
    spread: float = 0.10

    @classmethod
    def measured(cls, packed: Path) -> "SizeModel":
        """Ratios and the JSON fit from the index of a packed dataset (a local folder)."""
        t = pq.read_table(Path(packed) / schema.INDEX_FILE).to_pydict()
        n = len(t["patch_id"])
        ratios = {}
        for name in schema.MODALITY_NAMES:
            sizes, raws = [], []
            size_col = member_columns(name)[1]
            for i in range(n):
                if t[size_col][i] is None:
                    continue
                sizes.append(t[size_col][i])
                raws.append(raw_npy_bytes(name, t.get(dates_column(name), [None] * n)[i]))
            if sizes:
                ratios[name] = float(np.sum(sizes) / np.sum(raws))
        missing = set(schema.MODALITY_NAMES) - set(ratios)
        if missing:
            raise SystemExit(f"synth_index: error: {packed}: no member of {sorted(missing)} to measure")
        total_t = np.zeros(n)
        for s in T_RANGES:
            total_t += np.array([v or 0 for v in t[dates_column(s)]])
        json_size = t[member_columns(META_SUFFIX)[1]]
        b, a = np.polyfit(total_t, np.array(json_size, dtype=float), 1) if np.ptp(total_t) > 0 else (0.0, 0.0)
        if a <= 0:
            a, b = float(np.mean(json_size)), 0.0
        return cls(ratios=ratios, json=(float(a), float(b)))


def raw_npy_bytes(name: str, n_dates: int | None) -> int:
    """Bytes of a modality's decoded array plus its `.npy` header (128)."""
    mod = schema.modality(name)
    return mod.n_bands(n_dates) * mod.size_px**2 * mod.np_dtype.itemsize + 128


# --------------------------------------------------------------------------------------------
# Layout: domain-years, ROIs, patches, splits
# --------------------------------------------------------------------------------------------
@dataclass
class Layout:
    patch_id: list[str]
    split: np.ndarray  # object array of split names
    domain: list[str]
    year: np.ndarray
    roi: list[str]
    row: np.ndarray
    col: np.ndarray
    xmin: np.ndarray
    ymax: np.ndarray
    t: dict[str, np.ndarray]  # series -> T per patch


def _spread(total: int, n: int, rng: np.random.Generator, low: float = 0.5) -> np.ndarray:
    """`n` positive integers summing to `total`, uneven (uniform weights in [low, 1])."""
    if not 0 < n <= total:
        raise ValueError(f"cannot spread {total} over {n} parts")
    w = rng.uniform(low, 1.0, n)
    parts = 1 + np.floor(w / w.sum() * (total - n)).astype(np.int64)
    parts[: total - parts.sum()] += 1
    assert parts.sum() == total and (parts > 0).all()
    return parts


def make_layout(seed: int, split_sizes: dict[str, int] = SPLIT_SIZES, n_rois: int = N_ROIS) -> Layout:
    rng = np.random.default_rng(seed)
    test_dy = [(d, schema.DOMAIN_YEARS[d][0]) for d in schema.OFFICIAL_TEST_DOMAINS]
    other_dy = [(d, y) for d, ys in schema.DOMAIN_YEARS.items() if d not in schema.OFFICIAL_TEST_DOMAINS for y in ys]
    n_test = split_sizes.get("test", 0)
    n_other = sum(split_sizes.values()) - n_test
    total = n_test + n_other
    rois_test = max(1, round(n_rois * n_test / total)) if n_test else 0
    rois_other = n_rois - rois_test
    if n_rois < 2 or (n_other and not rois_other):
        raise ValueError(f"{n_rois} ROIs cannot hold both the test and the other splits")
    groups = [(test_dy, n_test, rois_test, True), (other_dy, n_other, rois_other, False)]
    cols: dict[str, list] = {k: [] for k in ("pid", "test", "domain", "year", "roi", "row", "col", "x", "y")}
    t_cols: dict[str, list] = {s: [] for s in T_RANGES}
    for dys, n_patches, n_group_rois, is_test in groups:
        if not n_patches:
            continue
        if n_group_rois < len(dys):  # a scaled-down index: fewer domain-years than the real one
            dys = [dys[i] for i in sorted(rng.choice(len(dys), n_group_rois, replace=False))]
        rois_per_dy = _spread(n_group_rois, len(dys), rng)
        patches_per_roi = _spread(n_patches, n_group_rois, rng, low=0.2)
        k = 0
        for (domain, year), n_r in zip(dys, rois_per_dy):
            names = roi_names(int(n_r), rng, set())
            cx, cy = rng.uniform(200_000, 1_050_000), rng.uniform(6_250_000, 7_050_000)
            for name in names:
                n = int(patches_per_roi[k])
                k += 1
                width = math.ceil(math.sqrt(n))
                i = np.arange(n)
                rows, cs = i // width + 1, i % width + 1
                ox = round(cx + rng.uniform(-20_000, 20_000))
                oy = round(cy + rng.uniform(-20_000, 20_000))
                for s, (lo, hi) in T_RANGES.items():
                    t_cols[s].append(np.full(n, rng.integers(lo, hi + 1)))
                cols["pid"] += [f"{domain}-{year:04d}_{name}_{r}-{c}" for r, c in zip(rows, cs)]
                cols["domain"] += [domain] * n
                cols["roi"] += [name] * n
                cols["year"].append(np.full(n, year))
                cols["row"].append(rows)
                cols["col"].append(cs)
                cols["x"].append(ox + (cs - 1) * schema.PATCH_METERS)
                cols["y"].append(oy - (rows - 1) * schema.PATCH_METERS)
                cols["test"].append(np.full(n, is_test))
    is_test = np.concatenate(cols["test"])
    split = np.empty(len(is_test), dtype=object)
    split[is_test] = "test"
    other = np.flatnonzero(~is_test)
    rng.shuffle(other)
    start = 0
    for name, n in split_sizes.items():
        if name == "test":
            continue
        split[other[start : start + n]] = name
        start += n
    for pid in cols["pid"][:: max(1, len(cols["pid"]) // 1000)]:  # the grammar, on a sample
        schema.PatchId.parse(pid)
    return Layout(cols["pid"], split, cols["domain"], np.concatenate(cols["year"]), cols["roi"],
                  np.concatenate(cols["row"]), np.concatenate(cols["col"]), np.concatenate(cols["x"]),
                  np.concatenate(cols["y"]), {s: np.concatenate(v) for s, v in t_cols.items()})


# --------------------------------------------------------------------------------------------
# Member sizes, tar offsets, shards
# --------------------------------------------------------------------------------------------
def member_sizes(layout: Layout, model: SizeModel, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bytes of every member of every patch (the JSON one under `META_SUFFIX`)."""
    n = len(layout.patch_id)
    out = {}
    for name in schema.MODALITY_NAMES:
        series = schema.dates_key(name)
        t = layout.t[series] if schema.modality(name).time_series else None
        if t is None:
            raw = np.full(n, raw_npy_bytes(name, None), dtype=np.float64)
        else:
            per_date = raw_npy_bytes(name, 1) - raw_npy_bytes(name, 0)
            raw = raw_npy_bytes(name, 0) + per_date * t.astype(np.float64)
        noise = rng.lognormal(0.0, model.spread, n)
        out[name] = np.maximum(64, np.round(raw * model.ratios[name] * noise)).astype(np.int64)
    total_t = sum(layout.t.values())
    out[META_SUFFIX] = np.round(model.json[0] + model.json[1] * total_t).astype(np.int64)
    return out


def _header_len(name_len: int, cache: dict[int, int]) -> int:
    if name_len not in cache:
        cache[name_len] = len(member_header("x" * name_len, 1))
    return cache[name_len]


def lay_out_shards(layout: Layout, sizes: dict[str, np.ndarray], target_shards: int, seed: int,
                   split_order: tuple[str, ...]) -> tuple[dict[str, np.ndarray], list[dict], np.ndarray]:
    """Tar offsets per member, shards per split (the packer's filling rule), and the row order.

    Returns (columns, shard records, row order): the index lists rows split by split, each split
    in its shuffled packing order, as `flair-pack` writes it.
    """
    n = len(layout.patch_id)
    members = [META_SUFFIX, *schema.MODALITY_NAMES]  # the packer's member order: metadata first
    cache: dict[int, int] = {}
    pid_len = np.fromiter((len(p) for p in layout.patch_id), dtype=np.int64, count=n)
    suffix_len = {m: len(any_member_name("", m)) for m in members}  # the member name after the patch id
    header = {m: np.array([_header_len(int(k) + suffix_len[m], cache) for k in range(pid_len.max() + 1)])[pid_len]
              for m in members}
    span = {m: header[m] + sizes[m] + (-sizes[m] % BLOCK) for m in members}
    sample_bytes = sum(span.values())
    target = sample_bytes.sum() / target_shards
    cols = {c: np.zeros(n, dtype=np.int64) for c in ("offset", "size", "sample_index", "shard_no")}
    for m in members:
        off, size = member_columns(m)
        cols[off], cols[size] = np.zeros(n, dtype=np.int64), sizes[m]
    shards: list[dict] = []
    order: list[np.ndarray] = []
    rng = np.random.default_rng([seed, 1])
    for split in split_order:
        rows = np.flatnonzero(layout.split == split)
        rows = rows[np.argsort(np.asarray(layout.patch_id, dtype=object)[rows], kind="stable")]
        rng.shuffle(rows)  # the packer shuffles each split so that shards mix domains
        order.append(rows)
        number, pos, count = 0, 0, 0
        for r in rows:
            if count and pos + sample_bytes[r] > target:
                shards.append(_shard_record(split, number, pos, count))
                number, pos, count = number + 1, 0, 0
            cols["shard_no"][r], cols["sample_index"][r], cols["offset"][r] = len(shards), count, pos
            count += 1
            cursor = pos
            for m in members:
                cols[member_columns(m)[0]][r] = cursor + header[m][r]
                cursor += span[m][r]
            cols["size"][r] = cursor - pos
            pos = cursor
        shards.append(_shard_record(split, number, pos, count))
    return cols, shards, np.concatenate(order)


def _shard_record(split: str, number: int, nbytes: int, samples: int) -> dict:
    path = schema.shard_name(split, number)
    return {"path": path, "split": split, "samples": int(samples), "bytes": int(nbytes) + len(END_OF_ARCHIVE),
            "sha256": hashlib.sha256(f"synthetic:{path}".encode()).hexdigest()}


def class_counts(n: int, n_classes: int, rng: np.random.Generator, present: tuple[int, int]) -> pa.Array:
    """Per-patch pixel counts (sum 512 x 512) over a few classes per patch, as a list<int64> column."""
    k = rng.integers(present[0], present[1] + 1, n)
    scores = rng.random((n, n_classes))
    keep = np.argsort(scores, axis=1) < k[:, None]  # k random classes per row
    weights = rng.gamma(0.7, 1.0, (n, n_classes)) * keep
    weights /= weights.sum(axis=1, keepdims=True)
    counts = np.floor(weights * PIXEL_COUNT).astype(np.int64)
    counts[np.arange(n), np.argmax(weights, axis=1)] += PIXEL_COUNT - counts.sum(axis=1)
    offsets = np.arange(0, (n + 1) * n_classes, n_classes, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(counts.reshape(-1)))


# --------------------------------------------------------------------------------------------
# The index and the manifest
# --------------------------------------------------------------------------------------------
@dataclass
class Generated:
    out: Path
    rows: int
    shards: int
    index_bytes: int
    shard_bytes: int
    splits: dict[str, int]


def generate(out: Path, seed: int = 0, target_shards: int = 1000, model: SizeModel | None = None,
             split_sizes: dict[str, int] = SPLIT_SIZES, n_rois: int = N_ROIS) -> Generated:
    """Write `<out>/index.parquet` and `<out>/manifest.json` (see the module docstring)."""
    model = model or SizeModel()
    rng = np.random.default_rng([seed, 2])
    layout = make_layout(seed, split_sizes, n_rois)
    sizes = member_sizes(layout, model, rng)
    splits = tuple(s for s in schema.SPLITS if split_sizes.get(s)) + tuple(sorted(set(split_sizes) - set(schema.SPLITS)))
    cols, shards, order = lay_out_shards(layout, sizes, target_shards, seed, splits)
    n = len(order)
    names = list(schema.MODALITY_NAMES)
    mods_offsets = np.arange(0, (n + 1) * len(names), len(names), dtype=np.int32)
    modalities = pa.ListArray.from_arrays(pa.array(mods_offsets), pa.array(names * n))
    xmin = layout.xmin[order]
    ymax = layout.ymax[order]
    pid = np.asarray(layout.patch_id, dtype=object)[order]
    known: dict[str, object] = {
        "patch_id": pid, "split": layout.split[order], "domain": np.asarray(layout.domain, dtype=object)[order],
        "year": layout.year[order], "roi": np.asarray(layout.roi, dtype=object)[order],
        "row": layout.row[order], "col": layout.col[order],
        "shard": np.asarray([shards[k]["path"] for k in cols["shard_no"][order]], dtype=object),
        "modalities": modalities, "crs": np.full(n, f"EPSG:{schema.CRS_EPSG}", dtype=object),
        "xmin": xmin, "ymin": ymax - schema.PATCH_METERS, "xmax": xmin + schema.PATCH_METERS, "ymax": ymax,
        COUNT_COLUMNS["AERIAL_LABEL-COSIA"]: class_counts(n, schema.N_CLASSES["AERIAL_LABEL-COSIA"], rng, (2, 9)),
        COUNT_COLUMNS["ALL_LABEL-LPIS"]: class_counts(n, schema.N_CLASSES["ALL_LABEL-LPIS"], rng, (1, 4)),
        "source_bytes": np.round(SOURCE_BYTES_PER_PATCH * rng.lognormal(0, 0.1, n)).astype(np.int64),
    }
    for c, v in cols.items():
        if c != "shard_no":
            known[c] = v[order]
    for name in schema.TIME_SERIES_MODALITIES:
        known[dates_column(name)] = layout.t[schema.dates_key(name)][order]
    for name in (META_SUFFIX, *schema.MODALITY_NAMES):  # member checksums: random, as a hash of unseen bytes would be
        known[checksum_column(name)] = pa.array(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64),
                                                type=pa.uint64())
    arrays = []
    for f in INDEX_SCHEMA:
        if f.name in known:
            value = known[f.name]
            arrays.append(value if isinstance(value, pa.Array) else pa.array(value, type=f.type))
        else:  # a column added to the schema after this generator: left empty, and said so
            print(f"synth_index: note: index column {f.name!r} is not generated (left null)", file=sys.stderr)
            arrays.append(pa.nulls(n, type=f.type))
    table = pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, INDEX_SCHEMA)], schema=INDEX_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    index_path = write_index(out, table)
    split_sizes_out = {s: {"samples": sum(r["samples"] for r in shards if r["split"] == s),
                           "shards": sum(1 for r in shards if r["split"] == s),
                           "bytes": sum(r["bytes"] for r in shards if r["split"] == s)} for s in splits}
    manifest = {
        "format_version": FORMAT_VERSION,
        "packer_version": packer_version(),
        "parameters": {"synthetic": True, "generator": "tools.synth_index", "seed": seed,
                       "target_shards": target_shards, "size_ratios": model.ratios, "json_fit": list(model.json),
                       "modalities": list(schema.MODALITY_NAMES)},
        "codec": manifest_codec(None, schema.MODALITY_NAMES),
        "modalities": modality_table(list(schema.MODALITY_NAMES)),
        "splits": split_sizes_out,
        "shards": shards,
        "index": {"path": schema.INDEX_FILE, "rows": n, "sha256": file_sha256(index_path)},
        "skipped": [],
        "not_in_splits": 0,
    }
    (out / schema.MANIFEST_FILE).write_text(json_text(manifest))
    return Generated(out, n, len(shards), index_path.stat().st_size, sum(r["bytes"] for r in shards),
                     {s: v["samples"] for s, v in split_sizes_out.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.synth_index", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m tools.synth_index --out /tmp/flair-hub-index")
    p.add_argument("--out", type=Path, required=True, help="folder for index.parquet + manifest.json")
    p.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    p.add_argument("--target-shards", type=int, default=1000, help="about this many shards in all (default 1000)")
    p.add_argument("--calibrate-from", type=Path, help="a packed dataset whose index gives the member size ratios")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real split sizes (default 1: 241,100 rows)")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1 or args.target_shards < 1:
        p.error("--scale must be in (0, 1] and --target-shards >= 1")
    model = SizeModel.measured(args.calibrate_from) if args.calibrate_from else SizeModel()
    sizes = {s: max(1, round(n * args.scale)) for s, n in SPLIT_SIZES.items()}
    t0 = time.perf_counter()
    res = generate(args.out, args.seed, args.target_shards, model, sizes, max(3, round(N_ROIS * args.scale)))
    print(f"{res.out}: {res.rows:,} rows ({', '.join(f'{k} {v:,}' for k, v in res.splits.items())}) over "
          f"{res.shards:,} shards ({res.shard_bytes / 1e9:,.0f} GB of shards); index.parquet {res.index_bytes / 1e6:.1f} MB; "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
