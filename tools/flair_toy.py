"""`flair-toy`: write a synthetic FLAIR-HUB tree whose structure matches the real dataset.

Layout, sizes, dtypes, georeferencing, GLOBAL_ALL_MTD GeoPackages and split CSVs follow
`packer.schema`. The content is learnable: smooth land-cover maps, and
every modality is rendered from them (see `tools.toy.scene`). Same config -> byte-identical tree,
whatever `workers` is, because each patch is rendered from its own seed.

Geometry: patch (R, C) of an ROI has its upper-left corner at ROI origin + ((C-1)*102.4, -(R-1)*102.4)
metres (R counts rows north -> south, C columns west -> east); the real R/C meaning is unconfirmed.
Splits: about a third of the domain-years are test-only (drawn from the official test domains), the
other patches are train/valid at random (~20 % valid); `--from-csv` takes each patch's split from
the CSV it is listed in.

    from tools.flair_toy import ToyConfig, generate
    result = generate(out_dir, ToyConfig(patches=12, t_s2=(4, 9), t_s1=(4, 9)))
    result.patch_ids, result.splits, result.path(result.patch_ids[0], "AERIAL_RGBI")
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from packer.command import run_command
from packer.cli_help import HelpFormatter, examples
from packer.schema import PatchId

from tools.toy.plan import LayoutRequest, PatchPlan, plan_layout
from tools.toy.scene import render_patch
from tools.toy.writers import write_geotiff, write_global_mtd, write_split_csvs
from tools.toy.zips import COMPRESSIONS, zip_tree


@dataclass
class ToyConfig:
    """What to generate. T ranges are inclusive (min, max) dates per ROI."""

    patches: int = 50
    domains: int = 2
    rois_per_domain: int = 3
    seed: int = 0
    t_s2: tuple[int, int] = (20, 150)
    t_s1: tuple[int, int] = (30, 150)
    missing_fraction: float = 0.0
    from_csv: Sequence[str | Path] | None = None
    csv_limit: int | None = None  # with from_csv: keep the first N rows of each CSV
    workers: int | None = None  # None: all cores; output does not depend on it
    compress: str | None = None  # e.g. "deflate"; None writes plain striped GTiff like the real files
    tiled: bool = False  # 256x256 tiles for rasters of at least 256 px (as GDAL/COG writers lay out big files)
    overwrite: bool = False  # allow a non-empty out dir (files are replaced, stale ones are kept)
    progress: bool = False
    zips: bool = False  # the Hub's layout: <out>/data/<folder>.zip instead of the folders (tools.toy.zips)
    zip_compression: str = "deflate"  # or "store"

    def __post_init__(self) -> None:
        for name in ("t_s2", "t_s1"):
            value = getattr(self, name)
            if len(tuple(value)) != 2:
                raise ValueError(f"ToyConfig.{name} must be (min, max), got {value!r}")
            setattr(self, name, (int(value[0]), int(value[1])))
        if isinstance(self.from_csv, (str, Path)):
            self.from_csv = [self.from_csv]
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"ToyConfig.workers must be >= 1, got {self.workers}")
        if self.csv_limit is not None and self.csv_limit < 1:
            raise ValueError(f"ToyConfig.csv_limit must be >= 1, got {self.csv_limit}")
        if self.zip_compression not in COMPRESSIONS:
            raise ValueError(f"ToyConfig.zip_compression must be one of {sorted(COMPRESSIONS)}, got {self.zip_compression!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "ToyConfig":
        """Build from a mapping, rejecting unknown keys by name (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ToyConfig key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)


@dataclass
class GenerateResult:
    """What was written: ids (sorted, or CSV order with from_csv), splits, modalities and T per patch."""

    out_dir: Path
    patch_ids: list[str]
    splits: dict[str, str]
    modalities: dict[str, tuple[str, ...]]
    n_dates: dict[str, dict[str, int]]  # patch -> series -> T (only series the patch has)
    csv_files: dict[str, Path]
    gpkg_files: list[Path] = field(default_factory=list)
    zip_files: list[Path] = field(default_factory=list)  # with `zips`: the data/*.zip written (no folders then)
    n_files: int = 0
    n_bytes: int = 0
    seconds: float = 0.0

    def path(self, patch_id: str, modality_name: str) -> Path:
        """The file of one modality of a patch (it may be absent: check `modalities`); with `zips`,
        its path inside the tree, which is also its member name in `data/<folder>.zip`."""
        return self.out_dir / PatchId.parse(patch_id).relative_path(modality_name)

    def ids_of(self, split: str) -> list[str]:
        return [p for p in self.patch_ids if self.splits[p] == split]


def _write_patch(job: tuple[PatchPlan, Path, int, str | None, bool]) -> tuple[int, int]:
    plan, out, seed, compress, tiled = job
    arrays = render_patch(plan, seed)
    size = 0
    for mod, arr in arrays.items():
        path = out / plan.pid.relative_path(mod)
        write_geotiff(path, arr, plan.origin, mod, compress, tiled)
        size += path.stat().st_size
    return len(arrays), size


def _run_jobs(jobs: list, workers: int, progress: bool) -> Iterator[tuple[int, int]]:
    bar = tqdm(total=len(jobs), unit="patch", desc="flair-toy", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 4:
            for job in jobs:
                yield _write_patch(job)
                bar.update()
        else:
            # fork keeps start-up cheap; but forking a process that already runs torch's thread
            # pools can deadlock, so then pay for spawn. Rendering is seeded per patch, so the
            # order in which workers finish does not matter.
            use_fork = "fork" in mp.get_all_start_methods() and "torch" not in sys.modules
            ctx = mp.get_context("fork" if use_fork else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for res in pool.map(_write_patch, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                    yield res
                    bar.update()
    finally:
        bar.close()


def generate(out_dir: str | Path, cfg: ToyConfig | None = None) -> GenerateResult:
    """Write a toy FLAIR-HUB tree under `out_dir` (or, with `cfg.zips`, its zips) and describe it."""
    cfg = cfg or ToyConfig()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{out} is not empty (pass --overwrite to write into it)")
    if not cfg.zips:
        return _generate_tree(out, cfg)
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    res = _generate_tree(staging, replace(cfg, zips=False))
    return to_zip_layout(res, out, cfg.zip_compression)


STAGING = ".flair-toy-tree"
"""With `zips`: the tree is written here first, zipped into `<out>/data/`, then removed."""


def to_zip_layout(res: GenerateResult, out: Path, compression: str) -> GenerateResult:
    """Zip the tree `res` wrote into `out/data/`, move its split CSVs to `out/`, remove the tree."""
    start = time.perf_counter()
    zips = zip_tree(res.out_dir, out, compression)
    csvs = {}
    for split, path in res.csv_files.items():
        csvs[split] = out / path.name
        os.replace(path, csvs[split])
    shutil.rmtree(res.out_dir)
    files = [*zips, *csvs.values()]
    return replace(res, out_dir=out, csv_files=csvs, gpkg_files=[], zip_files=zips, n_files=len(files),
                   n_bytes=sum(p.stat().st_size for p in files), seconds=res.seconds + time.perf_counter() - start)


def _generate_tree(out: Path, cfg: ToyConfig) -> GenerateResult:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    req = LayoutRequest(
        patches=cfg.patches, domains=cfg.domains, rois_per_domain=cfg.rois_per_domain, seed=cfg.seed,
        t_ranges={"SENTINEL2_TS": cfg.t_s2, "SENTINEL1-ASC_TS": cfg.t_s1, "SENTINEL1-DESC_TS": cfg.t_s1},
        missing_fraction=cfg.missing_fraction,
        from_csv=[Path(p) for p in cfg.from_csv] if cfg.from_csv else None, csv_limit=cfg.csv_limit,
    )
    plans = plan_layout(req)
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [(p, out, cfg.seed, cfg.compress, cfg.tiled) for p in plans]
    n_files = n_bytes = 0
    for files, size in _run_jobs(jobs, workers, cfg.progress):
        n_files += files
        n_bytes += size
    gpkgs = write_global_mtd(out, plans)
    csvs = write_split_csvs(out, plans)
    n_files += len(gpkgs) + len(csvs)
    n_bytes += sum(p.stat().st_size for p in (*gpkgs, *csvs.values()))
    return GenerateResult(
        out_dir=out,
        patch_ids=[p.patch_id for p in plans],
        splits={p.patch_id: p.split for p in plans},
        modalities={p.patch_id: p.modalities for p in plans},
        n_dates={p.patch_id: p.n_dates() for p in plans},
        csv_files=csvs, gpkg_files=gpkgs, n_files=n_files, n_bytes=n_bytes,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    d = ToyConfig()
    p = argparse.ArgumentParser(
        prog="flair-toy", formatter_class=HelpFormatter,
        description="Write a synthetic FLAIR-HUB tree with the real layout, sizes, dtypes, georeferencing, "
                    "GLOBAL_ALL_MTD GeoPackages and split CSVs, and learnable content (same seed, same bytes).",
        epilog=examples(
            "flair-toy --out toy/ --patches 50",
            "flair-toy --out toy/ --from-csv FLAIR-HUB_TOY-DATASET_*.csv --csv-limit 20",
            "flair-toy --out toy/ --patches 24 --missing-fraction 0.3 --zonal toy_zonal/",
        ))
    p.add_argument("--out", required=True, type=Path, help="output root (created; must be empty unless --overwrite)")
    p.add_argument("--patches", type=int, default=d.patches,
                   help="total patches (ignored with --from-csv)")
    p.add_argument("--domains", type=int, default=d.domains, help="domain-years; about a third are test-only")
    p.add_argument("--rois-per-domain", type=int, default=d.rois_per_domain, help="ROIs (patch grids) per domain-year")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed: the same seed writes the same bytes")
    p.add_argument("--t-s2", type=int, nargs=2, metavar=("MIN", "MAX"), default=d.t_s2, help=f"S2 dates per ROI, drawn in [MIN, MAX] (default: {d.t_s2[0]} {d.t_s2[1]})")
    p.add_argument("--t-s1", type=int, nargs=2, metavar=("MIN", "MAX"), default=d.t_s1, help=f"S1 dates per ROI and orbit, drawn in [MIN, MAX] (default: {d.t_s1[0]} {d.t_s1[1]})")
    p.add_argument("--missing-fraction", type=float, default=d.missing_fraction,
                   help="share of patches lacking some optional modalities (historical, SPOT, S1, S2)")
    p.add_argument("--from-csv", nargs="+", type=Path, metavar="CSV",
                   help="reproduce the patch ids of official split CSVs (split = the CSV a patch is in; "
                        "default: generated ids)")
    p.add_argument("--csv-limit", type=int, help="with --from-csv: first N rows of each CSV (default: all rows)")
    p.add_argument("--workers", type=int, help="processes (default: all cores); output is identical")
    p.add_argument("--compress", choices=("deflate", "lzw", "zstd"), help="GeoTIFF compression (default: none, like the real files)")
    p.add_argument("--tiled", action="store_true", help="256x256 tiles in rasters of 256 px or more (default: striped)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--zips", action="store_true",
                   help="write the Hugging Face Hub's layout instead of folders: <out>/data/<DOMAIN>-<YEAR>_<MODALITY>.zip "
                        "and data/GLOBAL_ALL_MTD.zip (members keep the tree paths), split CSVs in <out>/")
    p.add_argument("--zip-compression", choices=sorted(COMPRESSIONS), default=d.zip_compression,
                   help=f"with --zips: how members are stored (default {d.zip_compression})")
    p.add_argument("--zonal", type=Path, metavar="DIR",
                   help="also mosaic one ROI of the tree into a zonal-detection test area in DIR "
                        "(one raster per modality, dates files, labels as the known answer, a zonal.yaml; "
                        "default: no zonal area)")
    p.add_argument("--zonal-roi", default=None, help="with --zonal: <DOMAIN>-<YEAR>_<ROI> (default: the largest ROI)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command("flair-toy", lambda: _run(args), expected=(ValueError,))


def _run(args: argparse.Namespace) -> int:
    cfg = ToyConfig(
        patches=args.patches, domains=args.domains, rois_per_domain=args.rois_per_domain, seed=args.seed,
        t_s2=tuple(args.t_s2), t_s1=tuple(args.t_s1), missing_fraction=args.missing_fraction,
        from_csv=args.from_csv, csv_limit=args.csv_limit, workers=args.workers, compress=args.compress,
        tiled=args.tiled, overwrite=args.overwrite, progress=True, zips=args.zips, zip_compression=args.zip_compression,
    )
    out = Path(args.out)
    if cfg.zips and args.zonal is not None:
        # The zonal area mosaics the tree's files: build it before the tree is zipped and removed.
        if out.exists() and any(out.iterdir()) and not cfg.overwrite:
            raise FileExistsError(f"{out} is not empty (pass --overwrite to write into it)")
        shutil.rmtree(out / STAGING, ignore_errors=True)
        res = generate(out / STAGING, replace(cfg, zips=False))
        rc = _zonal(res.out_dir, args)
        res = to_zip_layout(res, out, cfg.zip_compression)
    else:
        res = generate(out, cfg)
        rc = _zonal(res.out_dir, args) if args.zonal is not None else 0
    counts = {s: len(res.ids_of(s)) for s in ("train", "valid", "test")}
    what = f"{len(res.zip_files)} zips + {len(res.csv_files)} CSVs" if res.zip_files else f"{res.n_files} files"
    print(f"flair-toy: {len(res.patch_ids)} patches ({counts['train']} train / {counts['valid']} valid / "
          f"{counts['test']} test), {what}, {res.n_bytes / 1e6:.1f} MB in {res.seconds:.1f} s -> {res.out_dir}")
    return rc


def _zonal(tree: Path, args: argparse.Namespace) -> int:
    """`--zonal`: mosaic one ROI of the tree just written into a zonal-detection test area."""
    if args.zonal is None:
        return 0
    from tools import toy_zonal  # the zonal fixture reads the tree just written

    return toy_zonal.main(["--tree", str(tree), "--out", str(args.zonal),
                           *(["--roi", args.zonal_roi] if args.zonal_roi else [])])


if __name__ == "__main__":
    sys.exit(main())
