"""Shard formats side by side: raw read speed of the same tree through the same torch DataLoader settings.

    python -m tools.bench_formats --patches 150 --work /tmp/bench_formats [--batch-sizes 1,8,32]

Needs the `bench` extra (LitData, Mosaic streaming: see pyproject.toml); a format whose library is
missing is reported as such and left out.

1. Generates a tree shaped like the real files (`flair-toy --compress deflate --tiled`, a fixed
   number of dates per series so that every format can stack batches) and packs it with each
   format, from the same arrays: flair-pack (default settings), LitData chunks (zstd), Mosaic MDS
   (zstd). "disk / source" is the packed bytes over the source GeoTIFF bytes; Mosaic also keeps
   decompressed copies of its shards after the first pass (reported separately).
2. Readers, each a torch Dataset in a `DataLoader(batch_size=B, num_workers=W)`:
   per-file GeoTIFF (rasterio `read()` of each file, the reference's I/O), LitData, Mosaic, plain
   webdataset over the flair-pack shards (+ zstandard + `np.load(allow_pickle=False)`),
   flair-pack's `SampleReader` (map-style, ranged reads), and the hand-over ceiling (the arrays
   already in memory: what the DataLoader alone costs). Columns: 0 workers; 2 workers handing
   numpy arrays over by pickling ("pickled"); 2 workers with `default_collate` (tensors in torch
   shared memory, "torch shared memory"); workers persist from pass to pass (`persistent_workers`,
   as flair-stream's loader does by default), so the timed passes are every reader's steady state.
   The last row is flair-stream's own loader
   (`StreamingLoader` without preprocessing: decode threads, per-member checksums, batches handed
   over through its shared-memory ring), with 0 and 2 workers, on the default pack, on one made
   with `--level DEM_ELEV=9` (the size-for-speed trade of the elevation setting), on one made with
   the opt-in `--shuffle` (byte-shuffled Blosc `.npy.blosc` members for the wider dtypes), and with the
   opt-in decoded cache (`data.decoded_cache`: like Mosaic, later passes read decompressed
   members from local disk; its size is reported beside Mosaic's copies).
3. Every cell runs in its own process: one verification pass (every array of every sample
   compared, by xxh3_64 of its bytes, with rasterio's read of the source file; every sample
   exactly once), then `--passes` timed passes; samples/s is their median. Mosaic's steady state
   is thus measured (its first pass, which decompresses the shards, is the verification pass).
   All cells run `--rounds` times, interleaved, and each keeps its best round, so that a change of
   load on a shared host hits every format alike.
4. Prints one table per batch size and the ratios of every cell to per-file, LitData and Mosaic
   in the same column.
5. The member-encoding table behind `packer.shardformat.encoding.DEFAULT_SETTINGS`: per modality, each candidate
   zstd setting's size (vs raw `.npy` and vs the source files) and its encode and decode cost (CPU
   ms per member, median of repeated decodes into a reused arena, as the loader decodes), next to
   the Blosc byte-shuffle candidates of `--shuffle` (`SHUFFLE_SETTINGS`) and format 1's Python
   byte-shuffle (`--codec-only` prints just this table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL2_MSK-SC",
              "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS", "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS")
FORMATS = ("per-file", "litdata", "mosaic", "webdataset", "flair-reader", "ceiling", "flair-loader", "flair-loader-dem9",
           "flair-loader-shuffle", "flair-loader-cache")
LABELS = {
    "per-file": "per-file GeoTIFF (rasterio), the reference's I/O",
    "litdata": "LitData chunks, zstd",
    "mosaic": "Mosaic MDS, zstd (steady state: reads its decompressed copies)",
    "webdataset": "plain webdataset + zstandard + np.load on flair-pack shards",
    "flair-reader": "flair-pack + SampleReader (map-style, ranged reads)",
    "ceiling": "hand-over ceiling (arrays in memory, DataLoader only)",
    "flair-loader": "flair-pack + StreamingLoader (decode threads, checksums, shared-memory ring)",
    "flair-loader-dem9": "same, packed with --level DEM_ELEV=9 (faster DEM decode, larger shards)",
    "flair-loader-shuffle": "same, packed with the opt-in --shuffle (Blosc .npy.blosc for the wider dtypes)",
    "flair-loader-cache": "same, with the opt-in decoded cache (data.decoded_cache; steady state, as Mosaic's)",
}
MODES = ("0", "2-pickled", "2-shm", "2-ring")


# --------------------------------------------------------------------------------------------
# Data: tree, packs, reference hashes
# --------------------------------------------------------------------------------------------
def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def packed_bytes(path: Path) -> int:
    """What a format wrote, without the decompressed copies a reader leaves next to it (Mosaic's
    `shard.N.mds` beside `shard.N.mds.zstd`) or our completion marker."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != ".complete"
               and not (f.suffix == ".mds" and f.with_name(f.name + ".zstd").exists()))


PACK_VARIANTS = {"flair-pack-dem9": {"level": {"DEM_ELEV": 9}}, "flair-pack-shuffle": {"shuffle": True}}
"""The other flair-pack packs of the same tree: pack folder -> `pack_dataset` options."""


def _pack_of(fmt: str) -> str:
    """The pack a flair-loader cell reads (`flair-loader-dem9` -> `flair-pack-dem9`)."""
    variant = "flair-pack-" + fmt.rsplit("-", 1)[-1]
    return variant if variant in PACK_VARIANTS else "flair-pack"


def prepare(work: Path, patches: int, dates: int) -> dict[str, Any]:
    """Tree + every format's pack (kept in `work` between runs); returns sizes and paths."""
    from tools.flair_toy import ToyConfig, generate

    tree = work / "tree"
    if not (tree / "GLOBAL_ALL_MTD").is_dir():
        generate(tree, ToyConfig(patches=patches, domains=2, rois_per_domain=4, seed=3, t_s2=(dates, dates),
                                 t_s1=(dates, dates), compress="deflate", tiled=True, progress=True, overwrite=True))
    ids = sorted(_patch_ids(tree))
    info: dict[str, Any] = {"tree": str(tree), "ids": ids,
                            "source_bytes": sum(f.stat().st_size for f in tree.glob("*_*/*/*.tif"))}
    flair = work / "flair-pack"
    if not (flair / "manifest.json").is_file():
        from packer.pack import pack_dataset

        pack_dataset(tree, flair, shard_size=32_000_000, keep_order=True, progress=True)
    info["flair-pack"] = str(flair)
    for variant, options in PACK_VARIANTS.items():
        out = work / variant
        if not (out / "manifest.json").is_file():
            from packer.pack import pack_dataset

            pack_dataset(tree, out, shard_size=32_000_000, keep_order=True, progress=True, **options)
        info[variant] = str(out)
    shutil.rmtree(decoded_cache_dir(info), ignore_errors=True)  # filled afresh by this run's first pass
    info["sizes"] = {name: sum(f.stat().st_size for f in Path(info[name]).glob("*/*.tar"))
                     for name in ("flair-pack", *PACK_VARIANTS)}
    for name, writer in (("litdata", write_litdata), ("mosaic", write_mosaic)):
        out = work / name
        done = out / ".complete"
        try:
            if not done.is_file():
                shutil.rmtree(out, ignore_errors=True)
                writer(tree, ids, out)
                done.write_text("ok")
            info[name] = str(out)
            info["sizes"][name] = packed_bytes(out)
        except ImportError as exc:
            print(f"bench_formats: {name} left out ({exc}); install the bench extra", file=sys.stderr)
    hashes = work / "reference.json"
    if not hashes.is_file():
        hashes.write_text(json.dumps(reference_hashes(tree, ids)))
    info["reference"] = str(hashes)
    return info


def _patch_ids(tree: Path) -> Iterable[str]:
    from packer.schema import parse_file_name

    for f in tree.glob("*_AERIAL_RGBI/*/*.tif"):
        p = parse_file_name(f.name)
        yield f"{f.parent.parent.name.split('_')[0]}_{p.roi}_{p.row}-{p.col}"


def source_arrays(tree: Path, pid: str) -> dict[str, np.ndarray]:
    """Every modality of a patch as rasterio's `read()` returns it (the reference's I/O)."""
    import rasterio

    from packer.schema import PatchId

    out = {}
    for m in MODALITIES:
        with rasterio.open(tree / PatchId.parse(pid).relative_path(m)) as f:
            out[m] = f.read()
    return out


def fingerprint(arr: np.ndarray) -> list:
    import xxhash

    arr = np.ascontiguousarray(arr)
    return [arr.dtype.str, list(arr.shape), xxhash.xxh3_64_hexdigest(arr)]


def reference_hashes(tree: Path, ids: list[str]) -> dict[str, dict[str, list]]:
    return {pid: {m: fingerprint(a) for m, a in source_arrays(tree, pid).items()} for pid in ids}


def write_litdata(tree: Path, ids: list[str], out: Path) -> None:
    import litdata

    litdata.optimize(fn=_litdata_item, inputs=[(str(tree), pid) for pid in ids], output_dir=str(out),
                     chunk_bytes="32MB", compression="zstd", num_workers=1, verbose=False, mode="overwrite")


def _litdata_item(item: tuple[str, str]) -> dict[str, Any]:
    tree, pid = item
    return {"patch_id": pid, **source_arrays(Path(tree), pid)}


def write_mosaic(tree: Path, ids: list[str], out: Path) -> None:
    from streaming import MDSWriter

    columns = {"patch_id": "str", **{m: "ndarray" for m in MODALITIES}}
    with MDSWriter(out=str(out), columns=columns, compression="zstd", size_limit="32mb") as w:
        for pid in ids:
            w.write({"patch_id": pid, **source_arrays(tree, pid)})


# --------------------------------------------------------------------------------------------
# Readers (run in the cell's subprocess)
# --------------------------------------------------------------------------------------------
class PerFile:
    def __init__(self, tree: str, ids: list[str]) -> None:
        self.tree, self.ids = Path(tree), ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"patch_id": self.ids[i], **source_arrays(self.tree, self.ids[i])}


class FlairReader:
    """flair-pack's raw-sample API in a map-style Dataset."""

    def __init__(self, pack: str) -> None:
        from trainer.data import Catalog, SampleReader, open_source

        src = open_source(pack)
        sel = Catalog(src).select(None, MODALITIES)
        self.reader = SampleReader(src, sel, MODALITIES)

    def __len__(self) -> int:
        return len(self.reader.selection)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.reader.read(i)
        return {"patch_id": s["patch_id"], **s["arrays"]}


class InMemory:
    def __init__(self, pack: str) -> None:
        r = FlairReader(pack)
        self.items = [{"patch_id": s["patch_id"], **{m: np.array(s[m]) for m in MODALITIES}}
                      for s in (r[i] for i in range(len(r)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _wds_decode(sample: dict[str, Any]) -> dict[str, Any]:
    import io

    import zstandard

    from packer import schema

    dctx = zstandard.ZstdDecompressor()
    out = {"patch_id": sample["__key__"]}
    for m in MODALITIES:
        out[m] = np.load(io.BytesIO(dctx.decompress(sample[schema.wds_member_key(m)])), allow_pickle=False)
    return out


def make_dataset(fmt: str, info: dict[str, Any], batch: int) -> Any:
    if fmt == "per-file":
        return PerFile(info["tree"], info["ids"])
    if fmt == "flair-reader":
        return FlairReader(info["flair-pack"])
    if fmt == "ceiling":
        return InMemory(info["flair-pack"])
    if fmt == "webdataset":
        import webdataset as wds

        urls = sorted(str(p) for p in Path(info["flair-pack"]).glob("*/*.tar"))
        return wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(_wds_decode)
    if fmt == "litdata":
        import litdata

        return litdata.StreamingDataset(info["litdata"], shuffle=False)
    if fmt == "mosaic":
        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        return StreamingDataset(local=info["mosaic"], shuffle=False, batch_size=batch)
    raise ValueError(fmt)


def numpy_stack(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate that keeps numpy arrays: with workers they cross the process boundary pickled."""
    out: dict[str, Any] = {"patch_id": [it["patch_id"] for it in items]}
    for m in MODALITIES:
        out[m] = np.stack([np.asarray(it[m]) for it in items])
    return out


def batches(fmt: str, mode: str, batch: int, info: dict[str, Any]) -> Callable[[], Iterable[dict[str, Any]]]:
    """A function that runs one pass and yields batches of {patch_id: [...], modality: (B, ...)}."""
    from torch.utils.data import DataLoader, default_collate

    if fmt.startswith("flair-loader"):
        return _flair_loader(mode, batch, info, _pack_of(fmt), cache=fmt.endswith("cache"))
    workers = 0 if mode == "0" else 2
    collate = numpy_stack if mode in ("0", "2-pickled") else default_collate
    ds = make_dataset(fmt, info, batch)
    # Workers persist from pass to pass, as the flair loader's do (data.persistent_workers): every
    # reader's steady state, none paying for worker start-up in each pass.
    kw = {"prefetch_factor": 2, "persistent_workers": True} if workers else {}
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate, shuffle=False, **kw)
    return lambda: loader


def _flair_loader(mode: str, batch: int, info: dict[str, Any], pack: str = "flair-pack",
                  cache: bool = False) -> Callable[[], Iterable[dict[str, Any]]]:
    from types import SimpleNamespace

    from trainer.data import Catalog, LoaderOptions, StreamingLoader, open_source

    src = open_source(info[pack])
    catalog = Catalog(src)
    # No preprocessing: every stored array is a fixed-shape batch key (this tree has fixed T).
    spec = SimpleNamespace(mono=MODALITIES, series=(), tasks=(), augment=False, needed_modalities=MODALITIES)
    options = LoaderOptions(batch_size=batch, shuffle=False, num_workers=0 if mode == "0" else 2,
                            decode_threads=2 if mode == "0" else 1, transform=_raw_sample,
                            decoded_cache=decoded_cache_dir(info) if cache else None, decoded_cache_min_free_gb=1)
    loader = StreamingLoader(src, catalog, catalog.select(None, MODALITIES), spec, options, rank=0, world_size=1)
    return lambda: loader


def decoded_cache_dir(info: dict[str, Any]) -> str:
    """Where the flair-loader-cache cells keep decoded members (beside the pack, like Mosaic's copies)."""
    return info["flair-pack"] + "-decoded-cache"


def _raw_sample(raw: dict[str, Any]) -> dict[str, Any]:
    return {"patch_id": raw["patch_id"], **raw["arrays"]}


def run_cell(fmt: str, mode: str, batch: int, passes: int, info: dict[str, Any]) -> dict[str, Any]:
    """One verified pass, then timed passes (median samples/s)."""
    import torch

    torch.set_num_threads(1)
    ref = json.loads(Path(info["reference"]).read_text())
    one_pass = batches(fmt, mode, batch, info)
    seen: dict[str, int] = {}
    for b in one_pass():
        valid = b["valid"].tolist() if "valid" in b else [True] * len(b["patch_id"])
        for i, pid in enumerate(b["patch_id"]):
            if not valid[i]:
                continue
            seen[pid] = seen.get(pid, 0) + 1
            for m in MODALITIES:
                arr = b[m][i]
                arr = arr.numpy() if torch.is_tensor(arr) else np.asarray(arr)
                if fingerprint(arr) != ref[pid][m]:
                    raise AssertionError(f"{fmt}/{mode}: {pid} {m} differs from rasterio's read of the source")
    if set(seen) != set(ref) or any(v != 1 for v in seen.values()):
        raise AssertionError(f"{fmt}/{mode}: {len(seen)} of {len(ref)} samples seen, repeats "
                             f"{sum(v > 1 for v in seen.values())}")
    rates = []
    for _ in range(passes):
        t0, n = time.perf_counter(), 0
        for b in one_pass():
            n += int(b["valid"].sum()) if "valid" in b else len(b["patch_id"])
        rates.append(n / (time.perf_counter() - t0))
    return {"samples_per_s": statistics.median(rates), "rates": rates}


def spawn_cell(fmt: str, mode: str, batch: int, passes: int, info_path: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "tools.bench_formats", "--run-cell", fmt, mode, str(batch), str(passes),
           str(info_path)]
    out = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    if out.returncode:
        print(f"bench_formats: {fmt} / {mode} / batch {batch} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def applicable(fmt: str, mode: str) -> bool:
    if fmt.startswith("flair-loader"):
        return mode in ("0", "2-ring")
    return mode != "2-ring"


def print_tables(results: dict[tuple[str, str, int], float], info: dict[str, Any], batch_sizes: list[int],
                 formats: list[str]) -> None:
    src = info["source_bytes"]
    ratio = {"per-file": 1.0, "litdata": info["sizes"].get("litdata", 0) / src,
             "mosaic": info["sizes"].get("mosaic", 0) / src, "webdataset": info["sizes"]["flair-pack"] / src,
             "flair-reader": info["sizes"]["flair-pack"] / src,
             **{f: info["sizes"][_pack_of(f)] / src for f in FORMATS if f.startswith("flair-loader")}}
    heads = ["0 workers", "2 workers, pickled", "2 workers, torch shared memory", "2 workers, shared-memory ring"]
    for b in batch_sizes:
        print(f"\nbatch {b}: samples/s (median of the timed passes)\n")
        print("| format | disk / source | " + " | ".join(heads) + " |")
        print("|---|---:|" + "---:|" * len(heads))
        for fmt in formats:
            cells = [f"{results[(fmt, m, b)]:.1f}" if (fmt, m, b) in results else "–" for m in MODES]
            r = f"{ratio[fmt]:.2f}" if fmt in ratio else "–"
            print(f"| {LABELS[fmt]} | {r} | " + " | ".join(cells) + " |")
        for base in ("per-file", "litdata", "mosaic", "ceiling"):
            if not any((base, m, b) in results for m in MODES):
                continue
            print(f"\nratio to {base} (same column; the ring column against {base}'s best 2-worker cell):\n")
            print("| format | " + " | ".join(heads) + " |")
            print("|---|" + "---:|" * len(heads))
            for fmt in formats:
                cells = []
                for m in MODES:
                    got = results.get((fmt, m, b))
                    ref = results.get((base, m, b)) if m != "2-ring" else max(
                        (results[(base, x, b)] for x in ("2-pickled", "2-shm") if (base, x, b) in results), default=None)
                    cells.append(f"{got / ref:.2f}" if got and ref else "–")
                print(f"| {LABELS[fmt]} | " + " | ".join(cells) + " |")
    print(f"\nsource: {src / 1e6:.1f} MB of GeoTIFFs (deflate, tiled), {len(info['ids'])} patches, "
          f"{info['mb_per_sample']:.2f} MB of arrays per sample")
    print("packed: " + ", ".join(f"{k} {v / 1e6:.1f} MB ({v / src:.3f} of source)" for k, v in info["sizes"].items()))
    if "mosaic" in info:
        copies = dir_bytes(Path(info["mosaic"])) - info["sizes"]["mosaic"] - len("ok")
        print(f"Mosaic's decompressed copies after the first pass: +{copies / 1e6:.1f} MB on disk")
    if Path(decoded_cache_dir(info)).is_dir():
        print(f"flair-stream's opt-in decoded cache after the first pass: +{dir_bytes(Path(decoded_cache_dir(info))) / 1e6:.1f} "
              "MB on disk")


CODEC_CANDIDATES = {
    "L1": {"level": 1}, "L3": {"level": 3}, "L9": {"level": 9},
    "L19, 3-byte matches, short search": {"level": 19, "window_log": 20, "chain_log": 12, "hash_log": 12,
                                          "search_log": 1},
    "Blosc shuffle + LZ4HC 9": {"codec": "blosc", "cname": "lz4hc", "clevel": 9},
    "Blosc shuffle + zstd 5": {"codec": "blosc", "cname": "zstd", "clevel": 5},
}
"""zstd settings for every modality; Blosc (`--shuffle`) ones for the dtypes wider than one byte."""
BITSHUFFLE_CANDIDATE = "Blosc bit-shuffle + LZ4HC 9 (measured, not used)"
"""Every modality, one-byte ones included (where a byte-shuffle does nothing): the `.npy` file in
one Blosc chunk, bit-shuffled by its item size. Not a pack setting; it answers whether the
costliest member of a `--shuffle` pack to decode, the uint8 aerial image, would pay for it."""
LEGACY_CANDIDATE = "format 1: Python byte-shuffle + L3"


def codec_table(tree: Path, ids: list[str], per_modality: int = 8, reps: int = 7) -> None:
    """Per modality and candidate: size vs raw and vs source, encode and decode CPU ms per member."""
    import io
    import zstandard

    from packer.shardformat.encoding import (DEFAULT_SETTINGS, LEGACY_SHUFFLE_MAGIC, SHUFFLE_SETTINGS, Arena,
                                             decode_array, decode_array_into, encode_array, member_suffix)
    from packer.schema import PatchId

    import numcodecs.blosc

    def bitshuffled(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        typed = np.frombuffer(buf.getvalue(), dtype=f"u{arr.dtype.itemsize}")  # the header is 64-byte aligned
        return bytes(numcodecs.blosc.compress(typed, b"lz4hc", 9, numcodecs.blosc.BITSHUFFLE, 0))

    def legacy(arr: np.ndarray) -> bytes:  # format 1's default: byte planes after the .npy header
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        npy = buf.getvalue()
        if arr.dtype.itemsize > 1:
            planes = arr.reshape(-1).view(np.uint8).reshape(-1, arr.dtype.itemsize).T
            npy = LEGACY_SHUFFLE_MAGIC + npy[: len(npy) - arr.nbytes] + planes.tobytes()
        return zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(npy)

    # As in the loader's decode threads and the packer's worker processes: one thread per member.
    # (From the main thread numcodecs would hand Blosc's work to its own threads, out of the
    # calling thread's CPU time.)
    numcodecs.blosc.use_threads = False
    names = [*CODEC_CANDIDATES, BITSHUFFLE_CANDIDATE, LEGACY_CANDIDATE]
    special = {BITSHUFFLE_CANDIDATE: (bitshuffled, ".npy.blosc"), LEGACY_CANDIDATE: (legacy, None)}
    print("\nmember encoding, per modality: size / raw .npy, size / source file, encode ms, decode ms "
          f"(CPU, median of {reps}; {per_modality} patches; * the default, + the --shuffle choice)\n")
    print("| modality | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    arena = Arena()
    for m in MODALITIES:
        pids = ids[:: max(1, len(ids) // per_modality)][:per_modality]
        paths = [tree / PatchId.parse(p).relative_path(m) for p in pids]
        arrays = [source_arrays(tree, p)[m] for p in pids]
        raw = sum(a.nbytes for a in arrays)
        src = sum(p.stat().st_size for p in paths)
        cells = []
        for name in names:
            setting = CODEC_CANDIDATES.get(name)
            if name in special:
                encode, suffix = special[name]
            else:
                encode, suffix = (lambda a, s=setting: encode_array(a, s)), member_suffix(setting)
                if suffix == ".npy.blosc" and arrays[0].dtype.itemsize == 1:
                    cells.append("–")  # a byte-shuffle of one-byte items is the identity
                    continue
            t0 = time.thread_time()
            blobs = [encode(a) for a in arrays]
            enc = (time.thread_time() - t0) / len(arrays) * 1e3
            back = decode_array(blobs[0], format_version=1) if suffix is None else \
                np.array(decode_array_into(blobs[0], Arena(), format_version=3, suffix=suffix))
            if back.dtype != arrays[0].dtype or back.tobytes() != arrays[0].tobytes():
                raise AssertionError(f"{name}: {m} does not decode to the array it encoded")
            times = []
            for _ in range(reps):
                t0 = time.thread_time()
                for b in blobs:
                    if suffix is None:
                        decode_array(b, format_version=1)
                    else:
                        arena.reset()
                        decode_array_into(b, arena, format_version=3, suffix=suffix)
                times.append((time.thread_time() - t0) / len(blobs) * 1e3)
            size = sum(map(len, blobs))
            star = "*" if DEFAULT_SETTINGS[m] == setting else "+" if setting and SHUFFLE_SETTINGS.get(m) == setting else ""
            cells.append(f"{star}{size / raw:.3f} / {size / src:.2f} / {enc:.1f} / {statistics.median(times):.2f}")
        print(f"| {m} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=150)
    ap.add_argument("--dates", type=int, default=30, help="dates per series (fixed, so that batches stack)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_formats"))
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per cell (after one verified pass)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds over all cells, each cell keeps its best (load on a shared host)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"subset of {','.join(FORMATS)}")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--codec-only", action="store_true", help="print only the member-encoding table")
    ap.add_argument("--run-cell", nargs=5, metavar=("FORMAT", "MODE", "BATCH", "PASSES", "INFO"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_cell:
        fmt, mode, batch, passes, info_path = args.run_cell
        info = json.loads(Path(info_path).read_text())
        print(json.dumps(run_cell(fmt, mode, int(batch), int(passes), info)))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    if args.codec_only:
        from tools.flair_toy import ToyConfig, generate

        tree = args.work / "tree"
        if not (tree / "GLOBAL_ALL_MTD").is_dir():
            generate(tree, ToyConfig(patches=args.patches, domains=2, rois_per_domain=4, seed=3,
                                     t_s2=(args.dates, args.dates), t_s1=(args.dates, args.dates), compress="deflate",
                                     tiled=True, progress=True, overwrite=True))
        codec_table(tree, sorted(_patch_ids(tree)))
        return 0
    info = prepare(args.work, args.patches, args.dates)
    ref = json.loads(Path(info["reference"]).read_text())
    first = next(iter(ref.values()))
    info["mb_per_sample"] = sum(np.prod(s) * np.dtype(d).itemsize for d, s, _ in first.values()) / 1e6
    info_path = args.work / "info.json"
    info_path.write_text(json.dumps(info))
    formats = [f for f in args.formats.split(",") if f in FORMATS and (f not in ("litdata", "mosaic") or f in info)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    results: dict[tuple[str, str, int], float] = {}
    modes = [m for m in args.modes.split(",") if m in MODES]
    cells = [(f, m, b) for b in batch_sizes for f in formats for m in modes if applicable(f, m)]
    from tqdm import tqdm

    for fmt, mode, b in tqdm(cells * args.rounds, desc="bench_formats", unit="cell"):
        res = spawn_cell(fmt, mode, b, args.passes, info_path)
        if res is not None:
            results[(fmt, mode, b)] = max(results.get((fmt, mode, b), 0.0), res["samples_per_s"])
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print_tables(results, info, batch_sizes, formats)
    codec_table(Path(info["tree"]), info["ids"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
