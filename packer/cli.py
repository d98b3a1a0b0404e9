"""`flair-pack`: pack a FLAIR-HUB tree, and verify / inspect / merge packed datasets.

    flair-pack --src FLAIR-HUB/ --out shards/ [options]      (or: flair-pack pack ...)
    flair-pack verify OUT
    flair-pack inspect OUT [PATCH_ID]
    flair-pack merge --out OUT PART_DIR [PART_DIR ...]
"""

from __future__ import annotations

import argparse
import re
import sys

from packer import schema
from packer.errors import PackError

COMMANDS = ("pack", "verify", "inspect", "merge")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """`256MB`, `1.5G`, `64MiB`, `100000` -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MB, 1GB, 64MiB)")
    unit = m[2].lower().rstrip("b")
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"unknown size unit in {text!r}")
    return int(float(m[1]) * _UNITS[unit])


def _modalities(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in schema.MODALITIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown modality {bad}; expected some of {', '.join(schema.MODALITY_NAMES)}")
    return names


def _levels(text: str) -> int | dict[str, int]:
    """`--level 9` (every modality) or `--level DEM_ELEV=9,AERIAL_RGBI=3` (those modalities only)."""
    if "=" not in text:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a zstd level: {text!r} (N, or MODALITY=N,...)") from None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        _modalities(name)
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a zstd level for {name}: {value!r}") from None
    return out


def pack_parser() -> argparse.ArgumentParser:
    # Imported here: spawned pack workers re-import the console script, and should stay light.
    from packer.pack import DEFAULT_SHARD_SIZE, ON_ERROR

    p = argparse.ArgumentParser(
        prog="flair-pack", description="Pack a FLAIR-HUB GeoTIFF tree into WebDataset shards + index.parquet + "
        "manifest.json (docs/packing.md). Rerun the same command to resume an interrupted pack.",
        epilog="other commands: flair-pack verify OUT | flair-pack inspect OUT [PATCH_ID] | "
               "flair-pack merge --out OUT PART_DIR... (each has --help)")
    p.add_argument("--src", required=True, help="FLAIR-HUB root (modality folders + GLOBAL_ALL_MTD/)")
    p.add_argument("--out", required=True, help="output folder, or s3://bucket/prefix (rerun the same command to resume)")
    p.add_argument("--staging", default=None,
                   help="with an s3:// --out: local folder for the shard being written (default: under $TMPDIR)")
    p.add_argument("--modalities", type=_modalities, default=schema.MODALITY_NAMES,
                   help="comma-separated subset to pack (default: all)")
    p.add_argument("--splits-csv", nargs="+", default=(), metavar="[SPLIT=]CSV",
                   help="official split CSVs (',' or ';'); split from the name or SPLIT=path")
    p.add_argument("--split-column", default=None, help="column of GLOBAL_ALL_MTD_SPLIT.gpkg (default split_1)")
    p.add_argument("--shard-size", type=parse_size, default=DEFAULT_SHARD_SIZE, help="target shard size (default 256MB)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--keep-order", action="store_true", help="keep source order instead of shuffling")
    p.add_argument("--workers", type=int, default=None, help="reader/encoder processes (default: all cores)")
    p.add_argument("--level", type=_levels, default=None, metavar="N | MODALITY=N,...",
                   help="zstd level (1-22) for every modality, or for the listed ones "
                        "(default: per-modality settings, docs/packing.md)")
    p.add_argument("--num-parts", type=int, default=1, help="split the patches into N parts (job arrays)")
    p.add_argument("--part", type=int, default=0, help="which part (0..N-1) this run packs")
    p.add_argument("--on-error", choices=ON_ERROR, default="fail",
                   help="fail: stop at the first bad patch; skip: leave it out and list it (default fail)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_pack(argv: list[str]) -> int:
    from packer.pack import pack_dataset

    a = pack_parser().parse_args(argv)
    summary = pack_dataset(
        a.src, a.out, staging=a.staging, modalities=a.modalities, splits_csv=a.splits_csv, split_column=a.split_column,
        shard_size=a.shard_size, seed=a.seed, keep_order=a.keep_order, workers=a.workers, level=a.level,
        num_parts=a.num_parts, part=a.part, on_error=a.on_error, progress=not a.no_progress,
    )
    print(summary)
    return 0


def run_verify(argv: list[str]) -> int:
    from packer.verify import verify_dataset

    p = argparse.ArgumentParser(prog="flair-pack verify", description="Check shards against manifest and index.")
    p.add_argument("out", help="packed dataset: a folder or s3://bucket/prefix")
    p.add_argument("--no-decode", action="store_true", help="skip decoding the members (hashes, member checksums and offsets only)")
    a = p.parse_args(argv)
    report = verify_dataset(a.out, decode=not a.no_decode)
    print(report)
    return 0 if report.ok else 1


def run_inspect(argv: list[str]) -> int:
    from packer.inspection import describe_sample, summarize_dataset

    p = argparse.ArgumentParser(prog="flair-pack inspect", description="Summary of a dataset or one sample.")
    p.add_argument("out", help="packed dataset: a folder or s3://bucket/prefix")
    p.add_argument("patch_id", nargs="?")
    a = p.parse_args(argv)
    print(describe_sample(a.out, a.patch_id) if a.patch_id else summarize_dataset(a.out))
    return 0


def run_merge(argv: list[str]) -> int:
    from packer.merge import MODES, merge_parts

    p = argparse.ArgumentParser(prog="flair-pack merge", description="Join --num-parts outputs into one dataset.")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=MODES, default="link", help="how shards reach OUT (default: hard link)")
    p.add_argument("parts", nargs="+")
    a = p.parse_args(argv)
    for path in (a.out, *a.parts):  # merge links or copies files between local folders
        if "://" in path:
            raise PackError(path, "`flair-pack merge` works on local folders; copy the parts down first")
    m = merge_parts(a.out, a.parts, a.mode)
    print(f"merged {len(a.parts)} parts into {a.out}: {m['index']['rows']} samples, {len(m['shards'])} shards")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "pack"
    runner = {"pack": run_pack, "verify": run_verify, "inspect": run_inspect, "merge": run_merge}[command]
    try:
        return runner(argv)
    except PackError as exc:
        print(f"flair-pack: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"flair-pack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flair-pack: interrupted; complete shards are kept: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
