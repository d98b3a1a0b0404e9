"""What one rank pays to open the full FLAIR-HUB catalog and plan an epoch, at 8 to 512 ranks.

    python -m tools.bench_index --work /tmp/bench_index              # full-size synthetic index
    python -m tools.bench_index --index /data/flair-hub-shards       # any packed dataset

Every rank of a run opens the catalog (manifest + index.parquet), selects its split for the
config's modalities and plans the epoch (`epoch_order` + `cut_steps`) before its first batch.
For each world size, one fresh process per measurement (its own peak RSS) does what a rank does,
for the last rank (`world - 1`), `--workers` DataLoader workers each:

- open: `Catalog(source)`; select: `catalog.select(train, needed modalities)`;
- plan: `epoch_order` + `cut_steps` once; `plan x workers`: what the rank's worker processes add
  (the baseline loader re-planned the epoch in every worker; the current one plans once in the
  main process and hands the plan over);
- peak RSS of the process, and its growth over the RSS after imports (torch included: a rank
  has it loaded anyway);
- bytes read from the store to open + select (a counting source that takes the remote-read path).

The baseline is the code of `--baseline-ref` (the commit before the scale work, read with `git
show`, so it is measured in the same run on the same machine); `--baseline-ref none` skips it.
Rounds are interleaved and the median is kept. The index comes from `tools.synth_index` (241,100
rows, ~1,000 shards) unless `--index` names a packed dataset.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASELINE_REF = "28fc08b"
"""the catalog of 28fc08b: Python-list selection, stepped shuffle buffer, re-planning in every worker."""
DEFAULT_CONFIG = REPO / "configs" / "seed" / "LC-ALL.yaml"


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_baseline(ref: str, into: Path) -> tuple[Any, Any]:
    """The catalog and distribution modules as they were at `ref` (imported from `git show`)."""
    mods = []
    for name in ("catalog", "distribution"):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:trainer/data/{name}.py"], check=True,
                              capture_output=True, text=True).stdout
        path = into / f"baseline_{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


def needed_modalities(config: Path) -> tuple[str, ...]:
    from trainer import load_train_config
    from trainer.data import SampleSpec

    return SampleSpec.from_config(load_train_config([config]), augment=False).needed_modalities


def counting_source(base: str):
    """A local folder read the way a remote store is (ranged reads), counting the bytes fetched."""
    from packer.storage.read import Source

    class CountingSource(Source):
        fetched = 0
        requests = 0

        def _size(self, rel: str) -> int:
            return os.stat(os.path.join(self.base, rel)).st_size

        def _read_range(self, rel: str, start: int, length: int) -> bytes:
            type(self).fetched += length
            type(self).requests += 1
            with open(os.path.join(self.base, rel), "rb") as f:
                f.seek(start)
                return f.read(length)

    return CountingSource(base)


# --------------------------------------------------------------------------------------------
# One measurement (a fresh process)
# --------------------------------------------------------------------------------------------
def run_one(args: argparse.Namespace) -> dict[str, Any]:
    from trainer.data import StreamingLoader  # noqa: F401  (torch and the loader: loaded in every rank anyway)
    from trainer.data import open_source

    if args.impl == "baseline":
        catalog_mod, dist = load_baseline(args.baseline_ref, Path(tempfile.mkdtemp(prefix="bench_index_")))
    else:
        import trainer.data as catalog_mod  # Catalog, epoch_order and cut_steps, as the baseline modules have them

        dist = catalog_mod
    needed = tuple(args.needed.split(","))
    if args.count_bytes:
        src = counting_source(str(args.index))
        cat = catalog_mod.Catalog(src)
        sel = cat.select(args.split, needed)
        return {"bytes": type(src).fetched, "requests": type(src).requests, "rows": len(sel)}
    rss0 = rss_mb()
    c0 = time.process_time()
    t0 = time.perf_counter()
    cat = catalog_mod.Catalog(open_source(str(args.index)))
    t1 = time.perf_counter()
    sel = cat.select(args.split, needed)
    t2 = time.perf_counter()
    rank = args.world - 1

    def plan():
        order = dist.epoch_order(sel.shard, sel.sample_index, args.seed, 0, True, args.window)
        return dist.cut_steps(order, 0, rank, args.world, args.batch, "pad")

    p = plan()
    t3 = time.perf_counter()
    c1 = time.process_time()
    replans = args.workers if args.impl == "baseline" else 0
    for _ in range(replans):  # each worker process of the rank planned the epoch again
        plan()
    c2 = time.process_time()
    return {"impl": args.impl, "world": args.world, "rows": len(sel), "batches": p.n_batches,
            "open_s": t1 - t0, "select_s": t2 - t1, "plan_s": t3 - t2, "rank_s": t3 - t0,
            "rank_cpu_s": c1 - c0, "workers_cpu_s": c2 - c1, "rss_imports_mb": rss0, "peak_rss_mb": peak_rss_mb()}


def subprocess_result(argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tools.bench_index", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench_index: error: a measurement failed ({' '.join(argv)}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
def measure(index: Path, worlds: list[int], workers: int, rounds: int, baseline_ref: str | None, needed: tuple[str, ...],
            split: str, batch: int) -> dict[str, Any]:
    impls = (["baseline"] if baseline_ref else []) + ["current"]
    common = ["--run-one", "--index", str(index), "--needed", ",".join(needed), "--split", split,
              "--workers", str(workers), "--batch", str(batch), "--baseline-ref", baseline_ref or "none"]
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(rounds):
        for world in worlds:
            for impl in impls:
                res = subprocess_result(common + ["--impl", impl, "--world", str(world)])
                runs.setdefault((impl, world), []).append(res)
                print(f"  round {r + 1}/{rounds} {impl:8s} world {world:4d}: rank {res['rank_s']:.2f} s, "
                      f"peak {res['peak_rss_mb']:.0f} MB", file=sys.stderr)
    fetched = {impl: subprocess_result(common + ["--impl", impl, "--world", "1", "--count-bytes"]) for impl in impls}
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0] if isinstance(v[0][m], (int, float))}
           for k, v in runs.items()}
    return {"impls": impls, "worlds": worlds, "median": med, "fetched": fetched, "rounds": rounds,
            "index_bytes": (index / "index.parquet").stat().st_size,
            "manifest_bytes": (index / "manifest.json").stat().st_size}


def print_table(res: dict[str, Any], workers: int) -> None:
    med, fetched = res["median"], res["fetched"]
    print(f"index.parquet {res['index_bytes'] / 1e6:.1f} MB, manifest.json {res['manifest_bytes'] / 1e6:.2f} MB; "
          f"median of {res['rounds']} round(s); per rank = the last rank, {workers} DataLoader workers")
    print()
    print("| code | world size | rows | open s | select s | plan s | rank s (open+select+plan) | "
          f"+ CPU s in {workers} workers | peak RSS MB | RSS growth MB | MB read from the store |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for world in res["worlds"]:
        for impl in res["impls"]:
            m = med[(impl, world)]
            print(f"| {impl} | {world} | {int(m['rows']):,} | {m['open_s']:.3f} | {m['select_s']:.3f} | "
                  f"{m['plan_s']:.3f} | {m['rank_s']:.3f} | {m['workers_cpu_s']:.3f} | {m['peak_rss_mb']:.0f} | "
                  f"{m['peak_rss_mb'] - m['rss_imports_mb']:.0f} | {fetched[impl]['bytes'] / 1e6:.1f} |")
    if "baseline" in res["impls"]:
        worst = max(res["worlds"])
        b, c = med[("baseline", worst)], med[("current", worst)]
        print()
        print(f"ratio: {b['rank_s'] / c['rank_s']:.1f}x faster per rank, "
              f"{(b['peak_rss_mb'] - b['rss_imports_mb']) / max(1.0, c['peak_rss_mb'] - c['rss_imports_mb']):.1f}x "
              f"less memory growth, {fetched['baseline']['bytes'] / max(1, fetched['current']['bytes']):.1f}x fewer "
              f"bytes from the store (world {worst})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_index", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m tools.bench_index --work /tmp/bench_index --rounds 3")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_index"), help="where the synthetic index is kept")
    p.add_argument("--index", type=Path, help="a packed dataset (local folder) instead of the synthetic full-size index")
    p.add_argument("--scale", type=float, default=1.0, help="synthetic index: fraction of the 241,100 rows (default 1)")
    p.add_argument("--worlds", type=int, nargs="+", default=[8, 64, 512], help="world sizes (default 8 64 512)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers per rank (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept (default 3)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config whose modalities are selected (LC-ALL)")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=5, help="batch size per rank (default 5, the reference's)")
    p.add_argument("--baseline-ref", default=BASELINE_REF, help="git revision of the baseline code, or 'none'")
    p.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="current", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--needed", default="", help=argparse.SUPPRESS)
    p.add_argument("--count-bytes", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=2025, help=argparse.SUPPRESS)
    p.add_argument("--window", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    baseline_ref = None if args.baseline_ref.lower() == "none" else args.baseline_ref
    if args.run_one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0
    if args.index is None:
        from tools.synth_index import SPLIT_SIZES, N_ROIS, generate

        args.index = args.work / (f"index-{args.scale:g}" if args.scale != 1 else "index")
        if not (args.index / "manifest.json").is_file():
            sizes = {s: max(1, round(n * args.scale)) for s, n in SPLIT_SIZES.items()}
            print(f"generating the synthetic index in {args.index} ...", file=sys.stderr)
            generate(args.index, target_shards=max(3, round(1000 * args.scale)), split_sizes=sizes,
                     n_rois=max(3, round(N_ROIS * args.scale)))
    if baseline_ref:
        ok = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{baseline_ref}:trainer/data/catalog.py"],
                            capture_output=True).returncode == 0
        if not ok:
            print(f"bench_index: note: no git revision {baseline_ref} here; baseline skipped", file=sys.stderr)
            baseline_ref = None
    needed = needed_modalities(args.config)
    res = measure(args.index, args.worlds, args.workers, args.rounds, baseline_ref, needed, args.split, args.batch)
    print_table(res, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
