"""`flair-simulate`: what a training run's data side will do, before paying for it.

    flair-simulate --data /tmp/flair-hub-index --config configs/seed/LC-ALL.yaml \\
                   --nodes 4 --gpus-per-node 8 --workers 8 --storage s3 --step-time 0.45

`--data` is a packed dataset or the full-size synthetic index of `python -m tools.synth_index`
(only the manifest and index are read). The config gives the modalities, batch size, decode
threads, shuffle window and seed (each can be overridden). The model step time per batch is given
(`--step-time`), or read from the JSON output of `python -m tools.bench_train --json` (`--step-time-from`).
The machine's CPU costs come from a calibration (`python -m tools.simulate.calibrate --out calib.json`,
run on a training node: `--calibration`); without one, a calibration of this machine is made
and kept in `--work`. Prints per node and per rank what an epoch takes: bytes, requests/s against
the store, samples/s, data-wait share, time to the first batch, memory, and which resource binds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tools.simulate.storage import MB, PRESETS

REPO = Path(__file__).resolve().parents[2]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def open_catalog(source: str):
    """The catalog, the seconds it took to open, and the memory it holds (what a rank pays)."""
    from trainer.data import Catalog
    from packer.storage.read import open_source

    before = _rss_mb()
    t0 = time.perf_counter()
    catalog = Catalog(open_source(source))
    return catalog, time.perf_counter() - t0, max(0.0, _rss_mb() - before)


def step_time_from(path: Path, setting: str | None) -> float:
    """Seconds per batch of the no-loader baseline in `tools/bench_train.py --json` output."""
    rows = json.loads(Path(path).read_text())
    rows = rows if isinstance(rows, list) else [rows]
    if setting:
        rows = [r for r in rows if r.get("setting") == setting] or rows
    return 1.0 / rows[0]["baseline"]["steps_per_s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flair-simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: flair-simulate --data /tmp/flair-hub-index --nodes 4 --gpus-per-node 8 "
                                       "--workers 8 --storage s3 --step-time 0.45")
    p.add_argument("--data", required=True, help="packed dataset (folder or URL) or the synthetic full-size index")
    p.add_argument("--config", type=Path, nargs="+", default=[REPO / "configs" / "seed" / "LC-ALL.yaml"],
                   help="training config (modalities, batch size, decode threads; default LC-ALL)")
    p.add_argument("--modalities", nargs="+", help="read these members instead of the config's")
    p.add_argument("--split", default=None, help="split to train on (default: the config's data.train_split)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8, help="ranks per node (default 8)")
    p.add_argument("--workers", type=int, help="DataLoader workers per rank (default: the config's)")
    p.add_argument("--decode-threads", type=int, help="threads per loader process (default: the config's)")
    p.add_argument("--batch-size", type=int, help="per rank (default: the config's)")
    p.add_argument("--step-time", type=float, default=0.0, help="model seconds per batch (0: loader only)")
    p.add_argument("--step-time-from", type=Path, help="tools/bench_train.py --json output (no-loader baseline)")
    p.add_argument("--bench-setting", help="which setting of that file (e.g. LC-ALL)")
    p.add_argument("--storage", choices=sorted(PRESETS), default="s3", help="preset (default s3)")
    p.add_argument("--latency-ms", type=float, help="override: first-byte latency per request")
    p.add_argument("--connection-mbps", type=float, help="override: one connection's bandwidth (megabits/s)")
    p.add_argument("--node-gbps", type=float, help="override: one node's bandwidth (gigabits/s)")
    p.add_argument("--store-gbps", type=float, help="override: the store's bandwidth to the whole job (gigabits/s)")
    p.add_argument("--max-rps", type=float, help="override: requests/s the store accepts from the job")
    p.add_argument("--cores-per-node", type=float, help="default: the calibrated machine's")
    p.add_argument("--calibration", type=Path, help="a calibration JSON (python -m tools.simulate.calibrate)")
    p.add_argument("--work", type=Path, default=Path("/tmp/flair-simulate"), help="where a new calibration is kept")
    p.add_argument("--verify", action="store_true", help="data.verify: every loader process hashes each shard it reads")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"flair-simulate: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from tools.simulate.calibrate import Calibration, calibrate, default_data, load_config
    from tools.simulate.model import predict
    from tools.simulate.workload import Topology, build
    from trainer.data import cut_steps, epoch_order
    from trainer.data import SampleSpec

    cfg = load_config(args.config, Path("."), args.batch_size)
    needed = tuple(args.modalities) if args.modalities else tuple(SampleSpec.from_config(cfg, augment=False).needed_modalities)
    batch = args.batch_size or cfg["hyperparams"]["batch_size"]
    threads = args.decode_threads or cfg["data"]["decode_threads"]
    workers = cfg["hardware"].get("num_workers", 0) if args.workers is None else args.workers
    split = args.split or cfg["data"]["train_split"]
    if args.nodes < 1 or args.gpus_per_node < 1 or workers < 0 or threads < 1 or batch < 1:
        raise ValueError("--nodes, --gpus-per-node, --decode-threads and --batch-size must be >= 1, --workers >= 0")
    step = args.step_time
    if args.step_time_from:
        step = step_time_from(args.step_time_from, args.bench_setting)
    if args.calibration:
        cal = Calibration.load(args.calibration)
    else:
        cached = args.work / "calibration.json"
        if cached.is_file():
            cal = Calibration.load(cached)
        else:
            print(f"flair-simulate: calibrating this machine (kept in {cached}) ...", file=sys.stderr)
            args.work.mkdir(parents=True, exist_ok=True)
            cal = calibrate(default_data(args.work), args.config, batch, threads,
                            say=lambda m: print(m, file=sys.stderr))
            cal.save(cached)
    store = PRESETS[args.storage].with_overrides(
        latency_s=args.latency_ms / 1000 if args.latency_ms is not None else None,
        per_connection=args.connection_mbps * 1e6 / 8 if args.connection_mbps else None,
        per_node=args.node_gbps * 1e9 / 8 if args.node_gbps else None,
        store_total=args.store_gbps * 1e9 / 8 if args.store_gbps else None,
        max_rps=args.max_rps)
    catalog, open_s, catalog_mb = open_catalog(args.data)
    t0 = time.perf_counter()
    selection = catalog.select(split, needed)
    # What one rank does before its first batch: open, select, plan its share of the epoch.
    order = epoch_order(selection.shard, selection.sample_index, cfg["hyperparams"]["seed"], 0, True,
                        cfg["data"]["shuffle_window"])
    topo = Topology(args.nodes, args.gpus_per_node, workers, threads, batch)
    cut_steps(order, 0, topo.world - 1, topo.world, batch, cfg["data"]["uneven"])
    start_s = open_s + time.perf_counter() - t0
    work = build(catalog, selection, needed, topo, remote=store.remote, seed=cfg["hyperparams"]["seed"],
                 shuffle_window=cfg["data"]["shuffle_window"], uneven=cfg["data"]["uneven"], verify=args.verify)
    pred = predict(work, topo, store, cal, step_time_s=step, cores_per_node=args.cores_per_node,
                   open_s=start_s, catalog_mb=catalog_mb)
    report = describe(args, cfg, needed, split, topo, store, cal, work, pred, step)
    print(report["text"])
    if args.json:
        args.json.write_text(json.dumps(report["figures"], indent=2) + "\n")
    return 0


def describe(args, cfg, needed, split, topo, store, cal, work, pred, step) -> dict[str, Any]:
    """The report: a few lines of context, then per node / per rank tables."""
    per_rank = work.rank_samples.mean()
    lines = [
        f"data: {args.data} ({split}: {len(work.selection):,} samples, {len(work.selection.shards):,} shards); "
        f"members read: {', '.join(needed)}",
        f"topology: {topo.nodes} node(s) x {topo.gpus_per_node} rank(s), {topo.workers} worker(s) x "
        f"{topo.threads} decode thread(s) per rank, batch {topo.batch_size} per rank; "
        f"{work.batches_per_rank:,} batches per rank per epoch",
        f"store: {store.name} (latency {1000 * store.latency_s:g} ms, per connection "
        f"{_rate(store.per_connection)}, per node {_rate(store.per_node)}, store {_rate(store.store_total)}, "
        f"cap {f'{store.max_rps:,.0f} requests/s' if store.max_rps else 'none'})",
        f"calibration: {cal.host}; {args.cores_per_node or cal.cores:g} cores per node"
        + ("" if args.cores_per_node else " (the calibrated machine's: pass --cores-per-node for your nodes)")
        + f"; model step {step:.3f} s per batch" + (" (not given: loader only)" if not step else ""),
        "",
        "| per sample | bytes fetched | ranged requests (+ shard checks) | bytes decoded |",
        "|---|---:|---:|---:|",
        f"| mean | {work.mean_fetched / MB:.2f} MB | {work.mean_requests:.2f} | {work.mean_decoded / MB:.2f} MB |",
        "",
        "| per node and epoch | value |",
        "|---|---:|",
        f"| bytes read from the store | {pred.node_bytes_per_epoch / 1e9:,.1f} GB |",
        f"| mean rate while training | {pred.node_mb_per_s:,.0f} MB/s |",
        f"| epoch time | {pred.epoch_s / 3600:,.2f} h ({per_rank:,.0f} samples per rank) |",
        "",
        "| per rank | value |",
        "|---|---:|",
        f"| samples/s | {pred.samples_per_s_rank:,.1f} (loader alone: {pred.loader_samples_per_s_rank:,.1f}) |",
        f"| data-wait share | {'-' if step <= 0 else f'{100 * pred.data_wait_share:.0f} %'} |",
        f"| time to first batch | {pred.first_batch_s:.2f} s |",
        f"| memory (training process + workers) | {pred.memory_rank_mb:,.0f} MB |",
        "",
        "| whole job | value |",
        "|---|---:|",
        f"| samples/s | {pred.samples_per_s_job:,.0f} |",
        f"| requests/s against the store | {pred.requests_per_s:,.0f} |",
        f"| binds | **{pred.binds}** |",
        "",
        "| resource | samples/s per rank it allows | utilisation |",
        "|---|---:|---:|",
    ]
    util = {s.name: s.utilization for s in pred.stations if s.servers > 0}  # a delay has no utilisation
    for name, bound in sorted(pred.bounds.items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} | {bound:,.1f} | |")
    for name, u in util.items():
        lines.append(f"| {name} (inside the loader) | | {100 * u:.0f} % |")
    figures = {
        "topology": vars(topo), "store": store.as_dict(), "step_time_s": step, "samples": len(work.selection),
        "fetched_bytes_per_sample": work.mean_fetched, "requests_per_sample": work.mean_requests,
        "decoded_bytes_per_sample": work.mean_decoded, "node_bytes_per_epoch": pred.node_bytes_per_epoch,
        "samples_per_s_rank": pred.samples_per_s_rank, "samples_per_s_job": pred.samples_per_s_job,
        "loader_samples_per_s_rank": pred.loader_samples_per_s_rank,
        "data_wait_share": pred.data_wait_share if step > 0 else None,
        "first_batch_s": pred.first_batch_s, "memory_rank_mb": pred.memory_rank_mb, "requests_per_s": pred.requests_per_s,
        "binds": pred.binds, "bounds": pred.bounds, "utilization": util, "epoch_s": pred.epoch_s,
    }
    return {"text": "\n".join(lines), "figures": figures}


def _rate(v: float | None) -> str:
    return "unlimited" if not v else f"{v / MB:,.0f} MB/s"


if __name__ == "__main__":
    sys.exit(main())
