"""`flair-pack`: pack a FLAIR-HUB tree, and verify / inspect / merge packed datasets.

    flair-pack --src FLAIR-HUB/ --out shards/ [options]      (or: flair-pack pack ...)
    flair-pack verify OUT
    flair-pack inspect OUT [PATCH_ID] [--plot PNG]
    flair-pack merge --out OUT PART_DIR [PART_DIR ...]
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

from packer import schema
from packer.cli_help import HelpFormatter, examples
from packer.command import EXIT_PROBLEMS_FOUND, report, run_command
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
    from packer.storage.retry import DEFAULT_ATTEMPTS, min_outage_s

    p = argparse.ArgumentParser(
        prog="flair-pack", formatter_class=HelpFormatter,
        description="Pack a FLAIR-HUB GeoTIFF tree into WebDataset shards + index.parquet (GeoParquet) + "
        "manifest.json + README.md (a Hugging Face dataset card); docs/packing.md. Rerun the same command to "
        "resume an interrupted pack.\n\nother commands (each has --help): flair-pack verify OUT | "
        "flair-pack inspect OUT [PATCH_ID] [--plot PNG] | flair-pack merge --out OUT PART_DIR...",
        epilog=examples(
            "flair-pack --src FLAIR-HUB/ --out shards/                      # every modality, official split",
            "flair-pack --src hf://datasets/IGNF/FLAIR-HUB --out shards/    # the Hub's zips, read in place",
            "flair-pack --src FLAIR-HUB/ --out s3://bucket/flair-hub --modalities AERIAL_RGBI,AERIAL_LABEL-COSIA",
        ))
    p.add_argument("--src", required=True,
                   help="FLAIR-HUB source: a folder (modality folders + GLOBAL_ALL_MTD/, and/or the Hub's zips, "
                        "with or without data/), a single .zip, hf://datasets/<owner>/<name>[@rev][/data], or an "
                        "http(s):// folder of zips (docs/packing.md)")
    p.add_argument("--src-list", default=None, metavar="FILE",
                   help="the zips to read, one per line, relative to --src (for a web folder that cannot be "
                        "listed; default: list --src)")
    p.add_argument("--out", required=True, help="output folder, or s3://bucket/prefix (rerun the same command to resume)")
    p.add_argument("--staging", default=None,
                   help="with an s3:// --out: local folder for the shard being written (default: under $TMPDIR)")
    p.add_argument("--modalities", type=_modalities, default=schema.MODALITY_NAMES, metavar="M1,M2,...",
                   help=f"comma-separated subset to pack, of {', '.join(schema.MODALITY_NAMES)} (default: all)")
    p.add_argument("--splits-csv", nargs="+", default=(), metavar="[SPLIT=]CSV",
                   help="official split CSVs (',' or ';'); split from the name or SPLIT=path "
                        "(default: none, splits come from GLOBAL_ALL_MTD_SPLIT.gpkg)")
    p.add_argument("--split-column", default=None,
                   help="column of GLOBAL_ALL_MTD_SPLIT.gpkg (default: split_1, the official split)")
    p.add_argument("--shard-size", type=parse_size, default=DEFAULT_SHARD_SIZE,
                   help=f"target shard size, e.g. 256MB, 1GB, 64MiB (default: {DEFAULT_SHARD_SIZE // 10**6}MB)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--keep-order", action="store_true", help="keep source order instead of shuffling")
    p.add_argument("--workers", type=int, default=None, help="reader/encoder processes (default: all cores)")
    p.add_argument("--level", type=_levels, default=None, metavar="N | MODALITY=N,...",
                   help="zstd level (1-22) for every modality, or for the listed ones "
                        "(default: per-modality settings, docs/packing.md)")
    p.add_argument("--shuffle", action="store_true",
                   help="opt-in: store the modalities of wider dtypes (DEM, SPOT, Sentinel series) as byte-shuffled "
                        "Blosc members (.npy.blosc, shard format 3): smaller and faster to read, but plain "
                        "webdataset and Hugging Face datasets then need numcodecs to decode them (docs/packing.md)")
    p.add_argument("--num-parts", type=int, default=1, help="split the patches into N parts (job arrays)")
    p.add_argument("--part", type=int, default=0, help="which part (0..N-1) this run packs")
    p.add_argument("--on-error", choices=ON_ERROR, default="fail",
                   help="fail: stop at the first bad patch; skip: leave it out and list it")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out that holds no pack (a pack made with other options is "
                        "never replaced)")
    p.add_argument("--retries", type=int, default=DEFAULT_ATTEMPTS,
                   help=f"with an s3:// --out: attempts per S3 operation through an outage (rides out at least "
                        f"{min_outage_s(DEFAULT_ATTEMPTS):.0f} s with the default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_pack(argv: list[str]) -> int:
    from packer.pack import pack_dataset

    a = pack_parser().parse_args(argv)
    summary = pack_dataset(
        a.src, a.out, staging=a.staging, modalities=a.modalities, splits_csv=a.splits_csv, split_column=a.split_column,
        shard_size=a.shard_size, seed=a.seed, keep_order=a.keep_order, workers=a.workers, level=a.level,
        shuffle=a.shuffle,
        num_parts=a.num_parts, part=a.part, on_error=a.on_error, progress=not a.no_progress,
        overwrite=a.overwrite, retries=a.retries, src_list=a.src_list,
    )
    print(summary)
    return 0


def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flair-pack verify", formatter_class=HelpFormatter,
        description="Check every shard against the manifest and the index: sizes, sha256, member offsets, and "
                    "(unless --no-decode) that every member decodes. Exit status 1 on any mismatch.",
        epilog=examples("flair-pack verify shards/", "flair-pack verify s3://bucket/flair-hub --no-decode"))
    p.add_argument("out", help="packed dataset: a folder or s3://bucket/prefix")
    p.add_argument("--no-decode", action="store_true", help="skip decoding the members (hashes, member checksums and offsets only)")
    return p


def run_verify(argv: list[str]) -> int:
    from packer.verify import verify_dataset

    a = verify_parser().parse_args(argv)
    found = verify_dataset(a.out, decode=not a.no_decode)
    print(found)
    return 0 if found.ok else EXIT_PROBLEMS_FOUND


def inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flair-pack inspect", formatter_class=HelpFormatter,
        description="Summary of a packed dataset (splits, shards, modalities, dates), or of one sample "
                    "(arrays, dtypes, ranges, dates, source files); --plot draws the sample.",
        epilog=examples("flair-pack inspect shards/",
                        "flair-pack inspect shards/ D006-2020_FF-S1-14_5-5",
                        "flair-pack inspect s3://bucket/flair-hub D006-2020_FF-S1-14_5-5 --plot patch.png"))
    p.add_argument("out", help="packed dataset: a folder or s3://bucket/prefix")
    p.add_argument("patch_id", nargs="?", help="a patch id of the index (omit it for the dataset summary)")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="with PATCH_ID: also draw every modality of the sample into this image "
                        "(default: no picture)")
    return p


def run_inspect(argv: list[str]) -> int:
    from packer.inspection import describe_sample, plot_patch, summarize_dataset

    p = inspect_parser()
    a = p.parse_args(argv)
    if a.plot and not a.patch_id:
        p.error("--plot needs a PATCH_ID")
    print(describe_sample(a.out, a.patch_id) if a.patch_id else summarize_dataset(a.out))
    if a.plot:
        print(f"wrote {plot_patch(a.out, a.patch_id, a.plot)}")
    return 0


def merge_parser() -> argparse.ArgumentParser:
    from packer.merge import MODES

    p = argparse.ArgumentParser(
        prog="flair-pack merge", formatter_class=HelpFormatter,
        description="Join the outputs of `flair-pack --num-parts N --part K` runs into one dataset: shards "
                    "renumbered per split, one index, one manifest, one dataset card. Local folders only.",
        epilog=examples("flair-pack merge --out shards/ part-0/ part-1/ part-2/ part-3/",
                        "flair-pack merge --out shards/ --mode copy part-*/"))
    p.add_argument("--out", required=True, help="new folder for the merged dataset")
    p.add_argument("--mode", choices=MODES, default="link",
                   help="how shards reach OUT: link (hard link, copy across file systems), copy, or move")
    p.add_argument("parts", nargs="+", metavar="PART_DIR", help="the part folders, each a finished pack")
    return p


def run_merge(argv: list[str]) -> int:
    from packer.merge import merge_parts

    a = merge_parser().parse_args(argv)
    for path in (a.out, *a.parts):  # merge links or copies files between local folders
        if "://" in path:
            raise PackError(path, "`flair-pack merge` works on local folders; copy the parts down first")
    m = merge_parts(a.out, a.parts, a.mode)
    print(f"merged {len(a.parts)} parts into {a.out}: {m['index']['rows']} samples, {len(m['shards'])} shards")
    return 0


RESUME_HINT = "complete shards are kept: rerun the same command to resume"


def unknown_command(word: str) -> str:
    """`flair-pack verfiy ...`: name the closest command instead of complaining about --src/--out."""
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"commands: {', '.join(COMMANDS)}; see flair-pack --help"
    return f"unknown command {word!r} ({hint})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    elif argv and not argv[0].startswith("-"):  # `pack` takes no positional argument: a misspelt command
        return report("flair-pack", unknown_command(argv[0]))
    else:
        command = "pack"
    runner = {"pack": run_pack, "verify": run_verify, "inspect": run_inspect, "merge": run_merge}[command]
    return run_command("flair-pack", lambda: runner(argv), expected=(PackError,),
                       interrupted=RESUME_HINT if command == "pack" else "", stop_on_sigterm=True)


if __name__ == "__main__":
    sys.exit(main())
