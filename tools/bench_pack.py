"""Benchmark of `flair-pack` against the floor of just reading the source GeoTIFFs.

    python -m tools.bench_pack --patches 100 --work /tmp/bench_pack

1. Generates a toy tree (`tools.flair_toy`, default T ranges) unless `--src` is given.
2. Floors: reads every source GeoTIFF with rasterio (`open().read()`, what the reference code does
   per sample: the floor the targets are stated against), and again with the packer's own read path
   (`packer.geotiffs.read_all_bands`, the same bytes without rasterio's per-band cost), with 1 and 2
   processes, after one untimed warm-up pass so every measurement sees the same (warm) page cache.
   The second floor isolates what encoding and writing cost on top of the packer's reading.
3. Packs the tree with 1 and 2 workers (each in a fresh subprocess: real start-up cost, and its
   own peak RSS), and once more a quarter of the patches (`--num-parts 4`) to show that the peak
   RSS does not grow with the number of patches. Floors and packs run in interleaved rounds and
   the best time of each is kept (the machine may be shared).
4. Zips (`tools.bench_zips`): the same tree as the Hub's zips, deflated and stored: reading
   GeoTIFFs and GeoPackages from them (GDAL `/vsizip/` vs the packer's reader), packing them in
   place vs packing the extracted tree vs `unzip` + pack, and packing them from a fake Hub over
   loopback HTTP with and without a per-request latency (requests per patch, bytes fetched).
5. Codec table: the default per-modality zstd settings and single zstd levels on the arrays of a
   sample of patches (size ratio vs raw `.npy`, encode and decode MB/s); `tools/bench_formats.py`
   measures the per-modality choice and the read side.
Prints markdown tables (the ones in docs/packing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from packer.shardformat.encoding import DEFAULT_SETTINGS, compression_settings, decode_array, encode_array
from packer.geotiffs import read_all_bands
from packer.schema import parse_file_name

REPO = Path(__file__).resolve().parents[1]
MB = 1e6

_PACK_SNIPPET = """
import json, resource, sys
from packer.pack import pack_dataset
from tools.bench_pack import cpu_seconds
c0 = cpu_seconds()
s = pack_dataset(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), num_parts=int(sys.argv[4]), part=0,
                 level=int(sys.argv[5]) if sys.argv[5] != "default" else None, progress=False)
print(json.dumps(dict(patches=s.patches, shards=s.shards, bytes_in=s.bytes_in, bytes_out=s.bytes_out,
    elapsed_s=s.elapsed_s, stream_s=s.stream_s, cpu_s=cpu_seconds() - c0, rss_main_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    rss_worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    source=s.source.as_dict() if s.source else None)))
"""


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (workers included).

    The machine is shared: CPU time per patch is far less disturbed by other work than wall time.
    """
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def source_files(src: Path) -> list[Path]:
    return sorted(p for p in src.glob("*_*/*/*.tif"))


FLOORS = {"rasterio": "rasterio `read()`", "packer": "packer read path"}
"""The two read-only floors: plain `rasterio.open(p).read()`, and `packer.geotiffs.read_all_bands`."""


def _read_all(paths: list[str], how: str) -> int:
    n = 0
    with rasterio.Env():  # one GDAL environment for all files, as flair-pack's workers do
        for p in paths:
            with rasterio.open(p) as f:
                n += (f.read() if how == "rasterio" else read_all_bands(f)).nbytes
    return n


def read_floor(paths: list[Path], procs: int, how: str = "rasterio") -> tuple[float, float]:
    """(wall s, CPU s) to read every file once with `procs` processes (files dealt round-robin)."""
    chunks = [[str(p) for p in paths[i::procs]] for i in range(procs)]
    c0, t0 = cpu_seconds(), time.perf_counter()
    if procs == 1:
        _read_all(chunks[0], how)
    else:
        with ProcessPoolExecutor(procs) as ex:
            list(ex.map(_read_all, chunks, [how] * procs))
    return time.perf_counter() - t0, cpu_seconds() - c0


def run_pack(src: Path | str, out: Path, workers: int, num_parts: int = 1, level: int | None = None,
             env: dict[str, str] | None = None) -> dict:
    """One pack in a fresh process (`env`: extra environment, e.g. HF_ENDPOINT); its summary as a dict."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _PACK_SNIPPET, str(src), str(out), str(workers), str(num_parts),
                          str(level or "default")], cwd=REPO, capture_output=True, text=True, check=True,
                         env=dict(os.environ, **(env or {})))
    d = json.loads(res.stdout.strip().splitlines()[-1])
    d["wall_s"] = time.perf_counter() - t0
    return d


def codec_table(paths: list[Path], levels: list[int], per_modality: int) -> list[dict]:
    """Compression of member arrays for the default settings and each level, overall and per modality."""
    by_mod: dict[str, list[Path]] = {}
    for p in paths:
        by_mod.setdefault(parse_file_name(p.name).modality, []).append(p)
    arrays = []
    for mod in sorted(by_mod):
        for p in by_mod[mod][:: max(1, len(by_mod[mod]) // per_modality)][:per_modality]:
            with rasterio.open(p) as f:
                arrays.append((mod, read_all_bands(f)))
    raw = sum(a.nbytes for _, a in arrays)
    rows = []
    for level in [None, *levels]:
        settings = compression_settings(level)
        for filt in ("none",):  # format 2 writes plain zstd .npy only (packer/shardformat/encoding.py)
            t0 = time.perf_counter()
            blobs = [encode_array(a, settings[mod]) for mod, a in arrays]
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            for b in blobs:
                decode_array(b)
            t_dec = time.perf_counter() - t0
            by_dtype: dict[str, list[int]] = {}
            for (mod, a), b in zip(arrays, blobs):
                acc = by_dtype.setdefault(f"{mod} ({a.dtype})", [0, 0])
                acc[0] += a.nbytes
                acc[1] += len(b)
            rows.append(dict(level=level or "default", filter=filt, ratio=sum(map(len, blobs)) / raw,
                             enc_mbs=raw / MB / t_enc, dec_mbs=raw / MB / t_dec,
                             by_dtype={k: v[1] / v[0] for k, v in sorted(by_dtype.items())}))
    return rows


def writer_capacity(src: Path, work: Path, n_samples: int = 30, total: int = 300) -> dict:
    """Patches/s that the single writer (main process + I/O thread) absorbs when samples arrive at once.

    With many workers the writer is the shared stage: it unpickles every sample, lays it out, and
    its I/O thread hashes and writes it. Here `n_samples` real samples are encoded up front, pickled
    as a worker would send them, and fed `total` times through `pickle.loads` + `SplitWriter.add`
    to real shards (the pipe's own cost is not included). Workers beyond capacity / (patches/s per
    worker) would wait on the writer; pack parts (`--num-parts`) side by side then.
    """
    import pickle

    from packer import schema
    from packer.ordered_io import OrderedIO
    from packer.pack import DEFAULT_SHARD_SIZE, SplitWriter
    from packer.encode_patch import build_sample
    from packer.discovery import discover
    from packer.storage.write import LocalStore

    patches = discover(src, schema.MODALITY_NAMES, (), None, 1, 0).patches[:n_samples]
    with rasterio.Env():
        blobs = [pickle.dumps(build_sample(p, compression_settings())) for p in patches]
    out = work / "writer_only"
    shutil.rmtree(out, ignore_errors=True)
    io = OrderedIO()
    writer = SplitWriter(LocalStore(out), "train", 0, DEFAULT_SHARD_SIZE, io)
    nbytes = 0
    c0, t0 = time.process_time(), time.perf_counter()  # process CPU: the I/O thread included
    for i in range(total):
        sample = pickle.loads(blobs[i % len(blobs)])
        nbytes += sum(len(d) for _, d in sample.members)
        writer.add(sample)
    writer.finish()
    io.drain()
    io.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(out, ignore_errors=True)
    return dict(patches_s=total / wall, mb_s=nbytes / MB / wall, cpu_ms=1000 * cpu / total, samples=total)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", type=int, default=100, help="toy patches to generate (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best of each is kept")
    ap.add_argument("--src", type=Path, default=None, help="benchmark an existing tree instead")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_pack"), help="scratch folder (deleted first)")
    ap.add_argument("--levels", default="1,3,6,9", help="zstd levels for the codec table")
    ap.add_argument("--codec-files", type=int, default=20, help="source files per modality in the codec table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="floors,zips,codec",
                    help="what to measure, comma-separated: floors (read floors + packs), zips (packing from "
                         "zips, locally and from a fake Hub), codec (default: all)")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="per-request delay of the slow fake Hub (default 20)")
    return ap.parse_args(argv)


@dataclass
class Source:
    """The tree measured: its root, GeoTIFFs, their bytes and the patch count."""

    root: Path
    paths: list[Path]
    nbytes: int
    n_patches: int


def source_tree(args: argparse.Namespace) -> Source:
    """The tree to measure: `--src`, or a toy tree generated in `--work`."""
    if args.src is None:
        from tools.flair_toy import ToyConfig, generate

        shutil.rmtree(args.work, ignore_errors=True)
        src = args.work / "src"
        t0 = time.perf_counter()
        res = generate(src, ToyConfig(patches=args.patches, domains=4, rois_per_domain=4, seed=args.seed))
        print(f"generated {len(res.patch_ids)} patches ({res.n_bytes / MB:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    else:
        src = args.src
    paths = source_files(src)
    src_bytes = sum(p.stat().st_size for p in paths)
    n_patches = len({str(parse_file_name(p.name).patch_id(0).location_key) for p in paths})
    print(f"source: {len(paths)} GeoTIFFs, {src_bytes / MB:.1f} MB, cpu cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    return Source(src, paths, src_bytes, n_patches)


def floors_section(args: argparse.Namespace, source: Source) -> None:
    """Read-only floors (rasterio, the packer's read path) against flair-pack with 1 and 2 workers."""
    src, paths, src_bytes, n_patches = source.root, source.paths, source.nbytes, source.n_patches
    read_floor(paths, 1)  # warm-up: same page-cache state for every timed pass
    # Interleaved rounds, best of each: the machine is shared, so one slow pass says little.
    floors: dict[tuple[str, int], float] = {}
    floor_cpu: dict[tuple[str, int], float] = {}
    packs: dict[int, dict] = {}
    for _ in range(args.rounds):
        for n in (1, 2):
            for how in FLOORS:
                wall, cpu = read_floor(paths, n, how)
                floors[how, n] = min(floors.get((how, n), float("inf")), wall)
                floor_cpu[how, n] = min(floor_cpu.get((how, n), float("inf")), cpu)
            d = run_pack(src, args.work / f"out{n}", n)
            if n not in packs or d["elapsed_s"] < packs[n]["elapsed_s"]:
                packs[n] = d
            packs[n]["cpu_s"] = min(packs[n]["cpu_s"], d["cpu_s"])
    quarter = run_pack(src, args.work / "out_quarter", 1, num_parts=4)
    print("\n| run | patches/s, whole run | patches/s, steady | MB/s source, steady | vs rasterio read-only "
          "(same processes), whole / steady / CPU | vs packer-read-path read-only, whole / steady / CPU "
          "| CPU ms/patch | shard/source bytes | peak RSS main / worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (how, n), t in floors.items():
        ratios = {h: (f"{floors[h, n] / t:.2f} / {floors[h, n] / t:.2f} / {floor_cpu[h, n] / floor_cpu[how, n]:.2f}")
                  for h in FLOORS}
        print(f"| read-only floor, {FLOORS[how]}, {n} proc | {n_patches / t:.1f} | {n_patches / t:.1f} | "
              f"{src_bytes / MB / t:.1f} | {ratios['rasterio']} | {ratios['packer']} | "
              f"{1000 * floor_cpu[how, n] / n_patches:.0f} | - | - |")

    def steady(d: dict) -> float:
        """Seconds per patch between the first and the last sample written (start-up excluded)."""
        return d["stream_s"] / max(d["patches"] - 1, 1)

    for n, d in packs.items():
        per = steady(d)
        ratios = {h: (f"{floors[h, n] / d['elapsed_s']:.2f} / {floors[h, n] / n_patches / per:.2f} / "
                      f"{floor_cpu[h, n] / d['cpu_s']:.2f}") for h in FLOORS}
        print(f"| flair-pack, {n} worker{'s' if n > 1 else ''} | {d['patches'] / d['elapsed_s']:.1f} | {1 / per:.1f} | "
              f"{d['bytes_in'] / d['patches'] / MB / per:.1f} | {ratios['rasterio']} | {ratios['packer']} | "
              f"{1000 * d['cpu_s'] / d['patches']:.0f} | {d['bytes_out'] / d['bytes_in']:.3f} | "
              f"{d['rss_main_mb']:.0f} / {d['rss_worker_mb']:.0f} MB |")
    q = quarter
    print(f"| flair-pack, 1 worker, 1/4 of the patches | {q['patches'] / q['elapsed_s']:.1f} | {1 / steady(q):.1f} | "
          f"{q['bytes_in'] / q['patches'] / MB / steady(q):.1f} | - | - | {1000 * q['cpu_s'] / q['patches']:.0f} | "
          f"{q['bytes_out'] / q['bytes_in']:.3f} | {q['rss_main_mb']:.0f} / {q['rss_worker_mb']:.0f} MB |")
    print(f"\n(best of {args.rounds} interleaved rounds; 'whole run' and CPU include discovery, worker start-up "
          f"(imports), index and manifest, 'steady' is the rate between the first and the last sample written; wall incl. interpreter "
          f"start: {packs[1]['wall_s']:.1f} s / {packs[2]['wall_s']:.1f} s; {n_patches} patches; codec: the "
          f"default per-modality zstd settings {sorted({s['level'] for s in DEFAULT_SETTINGS.values()})})")

    print(f"load average after the timed runs: {os.getloadavg()[0]:.1f} (other work on the machine skews the ratios)")
    cap = writer_capacity(src, args.work)
    per_worker = 1 / steady(packs[1])
    print(f"\nwriter alone (unpickle + layout + I/O thread: sha256, write, sync), {cap['samples']} samples: "
          f"{cap['patches_s']:.0f} patches/s, {cap['mb_s']:.0f} MB/s out, {cap['cpu_ms']:.1f} ms CPU/patch; "
          f"at {per_worker:.1f} patches/s per worker that feeds about {cap['patches_s'] / per_worker:.0f} workers")


def zips_section(args: argparse.Namespace, source: Source) -> None:
    """Packing from the Hub's zips, locally and from a fake Hub."""
    src, n_patches = source.root, source.n_patches
    from tools import bench_zips

    print(f"\n## Packing from the Hub's zips (same {n_patches} patches; load average {os.getloadavg()[0]:.1f})")
    zips = bench_zips.make_zips(src, args.work)
    paths_rows = bench_zips.read_paths(src, zips, args.rounds)
    gpkg_rows = bench_zips.read_gpkg_paths(zips, args.rounds)
    pack_rows = bench_zips.pack_rows(src, zips, args.work, args.rounds, latencies_ms=(0.0, args.latency_ms))
    bench_zips.print_tables(paths_rows, gpkg_rows, pack_rows,
                            f"(fake Hub on 127.0.0.1 serving the deflated zips; '{args.latency_ms:g} ms' adds that "
                            f"delay to every request; load average after: {os.getloadavg()[0]:.1f})")


def codec_section(args: argparse.Namespace, source: Source) -> None:
    """Compressed size and speed of zstd levels per modality."""
    paths = source.paths
    levels = [int(x) for x in args.levels.split(",")]
    rows = codec_table(paths, levels, args.codec_files)
    dtypes = list(rows[0]["by_dtype"])
    print(f"\ncodec on up to {args.codec_files} source files per modality (compressed / raw .npy bytes):\n")
    print("| level | filter | ratio, all | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['filter']} | {r['ratio']:.3f} | {r['enc_mbs']:.0f} | {r['dec_mbs']:.0f} |")
    print("\n| modality (dtype) | " + " | ".join(f"L{r['level']} {r['filter']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for d in dtypes:
        print(f"| {d} | " + " | ".join(f"{r['by_dtype'][d]:.3f}" for r in rows) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_tree(args)
    sections = set(args.sections.split(","))
    if "floors" in sections:
        floors_section(args, source)
    if "zips" in sections:
        zips_section(args, source)
    if "codec" in sections:
        codec_section(args, source)
    return 0

if __name__ == "__main__":
    sys.exit(main())
