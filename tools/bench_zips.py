"""The zip rows of `python -m tools.bench_pack`: packing straight from the Hub's zips.

Same patches, same run, interleaved rounds (best of each kept; the machine may be shared):

1. Read paths: every GeoTIFF of the zips opened and read with GDAL's `/vsizip/` (through rasterio)
   and with the packer's zip reader handing rasterio the member's bytes (`MemoryFile`), against the
   extracted files; GeoPackages likewise (pyogrio on `/vsizip/` vs on the member's bytes). This is
   the measurement behind `packer.opening`'s choice.
2. Packs, each in a fresh process: the extracted tree, the same files as deflated zips and as
   stored zips, with 1 and 2 workers; `unzip` of the deflated zips (what a user runs today before
   packing) and so unzip + pack vs packing the zips in place.
3. Packs from the fake Hub (`tools.fake_hub`) over loopback HTTP, with no added latency and with
   `--latency-ms` per request: patches/s, requests per patch, bytes fetched vs the zips' bytes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import pyogrio
import rasterio
from rasterio.io import MemoryFile

from packer import schema
from packer import zips as zips_module
from packer.geotiffs import read_all_bands
from packer.ranges import reader_for
from packer.zips import read_directory, read_member
from tools.toy.zips import COMPRESSIONS, zip_tree

MB = 1e6
HUB_REPO = "bench/FLAIR-HUB"


def make_zips(tree: Path, work: Path) -> dict[str, Path]:
    """The tree as the Hub's zips, once per compression: {"deflate": root, "store": root} (roots hold data/)."""
    out = {}
    for compression in COMPRESSIONS:
        root = work / f"zips_{compression}"
        shutil.rmtree(root, ignore_errors=True)
        zip_tree(tree, root, compression)
        out[compression] = root
    return out


def zip_files(root: Path) -> list[Path]:
    return sorted((root / "data").glob("*.zip"))


# ------------------------------------------------------------------------------------------------
# 1. Read paths
# ------------------------------------------------------------------------------------------------
def _tif_members(root: Path) -> list[tuple[str, object]]:
    members = []
    for z in zip_files(root):
        for m in read_directory(reader_for(str(z.resolve()))).members:
            if m.name.endswith(".tif"):
                members.append((str(z.resolve()), m))
    return members


def _timed(fn) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def read_paths(tree: Path, zips: dict[str, Path], rounds: int) -> list[dict]:
    """ms of CPU and wall per GeoTIFF for each way of reading it (best of `rounds`)."""
    files = sorted(tree.glob("*_*/*/*.tif"))
    ways = {"extracted files: `rasterio.open(path)`": lambda: [_read(rasterio.open(f)) for f in files]}
    for compression, root in zips.items():
        members = _tif_members(root)
        ways[f"{compression} zips: GDAL `/vsizip/`"] = (
            lambda members=members: [_read(rasterio.open(f"/vsizip/{z}/{m.name}")) for z, m in members])
        ways[f"{compression} zips: zip reader + `MemoryFile` (packer)"] = (
            lambda members=members: [_read_memory(read_member(reader_for(z), m)) for z, m in members])
        if compression == "deflate" and zips_module.inflater is not zlib:
            ways["deflate zips: the same, inflating with zlib instead of ISA-L"] = (
                lambda members=members: _with_zlib(lambda: [_read_memory(read_member(reader_for(z), m))
                                                            for z, m in members]))
    best: dict[str, tuple[float, float]] = {}
    with rasterio.Env():
        for _ in range(rounds):
            for name, fn in ways.items():
                wall, cpu = _timed(fn)
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], wall), min(old[1], cpu))
    base = best["extracted files: `rasterio.open(path)`"]
    return [dict(way=k, wall_ms=1000 * w / len(files), cpu_ms=1000 * c / len(files), vs_files_cpu=c / base[1])
            for k, (w, c) in best.items()]


def _with_zlib(fn) -> None:
    saved, zips_module.inflater = zips_module.inflater, zlib
    try:
        fn()
    finally:
        zips_module.inflater = saved


def _read(src) -> None:
    with src:
        read_all_bands(src)


def _read_memory(data: bytes) -> None:
    with MemoryFile(data) as mem, mem.open() as src:
        read_all_bands(src)


def read_gpkg_paths(zips: dict[str, Path], rounds: int) -> list[dict]:
    """ms to read the columns discovery reads from the largest dates GeoPackage, both ways."""
    name = schema.SENTINEL_DATES_FILES["SENTINEL2_TS"]
    columns = ["patch_id", schema.ACQUISITION_DATES_COLUMN]
    rows = []
    for compression, root in zips.items():
        z = str((root / "data" / f"{schema.GLOBAL_MTD_FOLDER}.zip").resolve())
        member = next(m for m in read_directory(reader_for(z)).members if m.name.endswith(name))
        ways = {"pyogrio on GDAL `/vsizip/`": lambda: pyogrio.read_arrow(f"/vsizip/{z}/{member.name}", columns=columns,
                                                                          read_geometry=False),
                "pyogrio on the member's bytes (packer)": lambda: pyogrio.read_arrow(
                    read_member(reader_for(z), member), columns=columns, read_geometry=False)}
        for way, fn in ways.items():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wall = min(_timed(fn)[0] for _ in range(rounds))
            rows.append(dict(zips=compression, way=way, ms=1000 * wall, mb=member.size / MB))
    return rows


# ------------------------------------------------------------------------------------------------
# 2-3. Packs
# ------------------------------------------------------------------------------------------------
def unzip_seconds(root: Path, dest: Path) -> float:
    """Wall seconds to extract every zip of `root` into `dest` with `unzip` (zipfile if absent)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    tool = shutil.which("unzip")
    t0 = time.perf_counter()
    for z in zip_files(root):
        if tool:
            subprocess.run([tool, "-q", "-o", str(z), "-d", str(dest)], check=True)
        else:
            with zipfile.ZipFile(z) as zf:
                zf.extractall(dest)
    return time.perf_counter() - t0


def pack_rows(tree: Path, zips: dict[str, Path], work: Path, rounds: int, workers: tuple[int, ...] = (1, 2),
              latencies_ms: tuple[float, ...] = (0.0, 20.0)) -> dict:
    """Interleaved rounds of: tree / zips (each compression) / fake-Hub packs per worker count, and unzip.

    Returns {"packs": {(kind, workers): best summary dict}, "unzip_s": best seconds, "zip_mb": deflated zips' MB}.
    """
    from tools.bench_pack import run_pack
    from tools.fake_hub import FakeHub

    best: dict[tuple[str, int], dict] = {}
    unzip_best = float("inf")

    def keep(key: tuple[str, int], d: dict) -> None:
        if key not in best or d["elapsed_s"] < best[key]["elapsed_s"]:
            cpu = min(d["cpu_s"], best[key]["cpu_s"]) if key in best else d["cpu_s"]
            best[key] = dict(d, cpu_s=cpu)

    hubs = {ms: FakeHub(zips["deflate"], latency_s=ms / 1000).start() for ms in latencies_ms}
    try:
        for _ in range(rounds):
            for n in workers:
                keep(("tree", n), run_pack(tree, work / "out_tree", n))
                for compression, root in zips.items():
                    keep((f"zips {compression}", n), run_pack(root, work / f"out_{compression}", n))
                for ms, hub in hubs.items():
                    keep((f"hub {ms:g} ms", n), run_pack(f"hf://datasets/{HUB_REPO}", work / "out_hub", n,
                                                         env={"HF_ENDPOINT": hub.url}))
            unzip_best = min(unzip_best, unzip_seconds(zips["deflate"], work / "unzipped"))
    finally:
        for hub in hubs.values():
            hub.stop()
        shutil.rmtree(work / "unzipped", ignore_errors=True)
    return {"packs": best, "unzip_s": unzip_best,
            "zip_mb": sum(z.stat().st_size for z in zip_files(zips["deflate"])) / MB}


def print_tables(paths: list[dict], gpkgs: list[dict], packs: dict, latency_note: str = "") -> None:
    print("\nReading GeoTIFFs from zips (every GeoTIFF of the tree once, best of the rounds, one process):\n")
    print("| read path | ms/GeoTIFF, wall | ms/GeoTIFF, CPU | CPU vs extracted files |")
    print("|---|---|---|---|")
    for r in paths:
        print(f"| {r['way']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {r['vs_files_cpu']:.2f} |")
    print("\nReading the Sentinel-2 dates GeoPackage from GLOBAL_ALL_MTD.zip:\n")
    print("| zips | read path | ms | GeoPackage MB |")
    print("|---|---|---|---|")
    for r in gpkgs:
        print(f"| {r['zips']} | {r['way']} | {r['ms']:.1f} | {r['mb']:.2f} |")

    best, unzip_s = packs["packs"], packs["unzip_s"]
    print("\nPacking from zips (fresh process per pack, best of the rounds; 'steady' leaves out start-up):\n")
    print("| source | workers | patches/s, whole | patches/s, steady | vs extracted tree, whole / steady / CPU | "
          "CPU ms/patch | requests (reads) per patch | bytes fetched / zip bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for (kind, n), d in sorted(best.items(), key=lambda kv: (kv[0][1], _order(kv[0][0]))):
        tree = best[("tree", n)]
        whole, steady = d["patches"] / d["elapsed_s"], (d["patches"] - 1) / max(d["stream_s"], 1e-9)
        t_whole, t_steady = tree["patches"] / tree["elapsed_s"], (tree["patches"] - 1) / max(tree["stream_s"], 1e-9)
        src = d.get("source")
        per_patch = f"{src['requests'] / d['patches']:.1f} ({src['member_requests'] / d['patches']:.1f} members)" if src else "-"
        fetched = f"{src['bytes'] / src['zip_bytes']:.3f}" if src else "-"
        cpu_ratio = tree["cpu_s"] / tree["patches"] / (d["cpu_s"] / d["patches"])
        print(f"| {kind} | {n} | {whole:.1f} | {steady:.1f} | {whole / t_whole:.2f} / {steady / t_steady:.2f} / "
              f"{cpu_ratio:.2f} | "
              f"{1000 * d['cpu_s'] / d['patches']:.0f} | {per_patch} | {fetched} |")
    for n in sorted({n for _, n in best}):
        tree, zipped = best[("tree", n)], best[("zips deflate", n)]
        total = unzip_s + tree["elapsed_s"]
        print(f"\n{n} worker(s): `unzip` of the deflated zips ({packs['zip_mb']:.0f} MB) {unzip_s:.1f} s, then packing the "
              f"tree {tree['elapsed_s']:.1f} s = {total:.1f} s ({tree['patches'] / total:.1f} patches/s); packing the zips "
              f"in place {zipped['elapsed_s']:.1f} s ({zipped['patches'] / zipped['elapsed_s']:.1f} patches/s): "
              f"{total / zipped['elapsed_s']:.2f}x faster, and no extracted copy on disk")
    if latency_note:
        print(latency_note)


def _order(kind: str) -> tuple[int, str]:
    return ({"tree": 0, "zips deflate": 1, "zips store": 2}.get(kind, 3), kind)
