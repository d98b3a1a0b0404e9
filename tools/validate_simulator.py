"""Does `flair-simulate` predict real loader runs? One command, one table.

    python -m tools.validate_simulator --work /tmp/validate_simulator

1. Toy shards (`tools.bench_loader.prepare`, `--patches`, every modality) and the LC-ALL config
   (all seven inputs, the S2 mask, CoSIA; the reference's preprocessing), batch 5.
2. A fresh calibration of this machine (`tools.simulate.calibrate`) on those shards.
3. For each setting: the store (local folder, or `tools/loopback_store.py` in its own process with
   a per-request latency and a bandwidth cap), 1 or 2 ranks (separate processes started together,
   as on one node), 0 or 2 DataLoader workers, the config's decode threads: every rank iterates
   its share of all samples for `--epochs` epochs (the first one warms up and is not counted),
   touching every page of every batch as the copy to a GPU would. Measured: samples/s per rank
   after its first batch, and the time to the first batch.
   Predicted: `tools.simulate` with the same index, plan, topology and store, the calibration, and
   the share of a core a loader process gets during the setting (the host is shared: a short
   pilot run of one loader process before and after the setting; their mean; 1 on a dedicated
   machine), for each of the setting's processes, up to the machine's cores.
4. The table: measured vs predicted, and the error; the last line says whether all are within
   `--tolerance`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "seed" / "LC-ALL.yaml"


# --------------------------------------------------------------------------------------------
# One rank of a measured run (a subprocess)
# --------------------------------------------------------------------------------------------
def run_rank(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tools.simulate.calibrate import _touch, load_config
    from trainer.data import StreamingLoader

    torch.set_num_threads(1)
    cfg = load_config([args.config], args.data, args.batch)
    cfg["data"]["source"] = args.source
    ld = StreamingLoader.from_config(cfg, None, rank=args.rank, world_size=args.world, num_workers=args.workers,
                                     shuffle=True, augment=False)
    Path(f"{args.barrier}.{args.rank}").touch()
    while not all(Path(f"{args.barrier}.{r}").exists() for r in range(args.world)):
        time.sleep(0.005)
    epochs = []
    for _ in range(args.epochs):
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        first, n, n_first = None, 0, 0
        for batch in ld:
            _touch(batch)
            if first is None:
                first, n_first = time.perf_counter() - t0, len(batch["patch_id"])
            n += len(batch["patch_id"])
        epochs.append({"samples": n, "wall_s": time.perf_counter() - t0, "first_s": first, "first_n": n_first,
                       "cpu_s": time.process_time() - c0, "children_cpu_s": _children_cpu() - k0})
    return {"epochs": epochs}


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(data: Path, source: str, ranks: int, workers: int, epochs: int, batch: int) -> list[dict[str, Any]]:
    barrier = tempfile.mktemp(prefix="flair-validate-")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tools.validate_simulator", "--run-rank", "--data", str(data),
                               "--source", source, "--rank", str(r), "--world", str(ranks), "--workers", str(workers),
                               "--epochs", str(epochs), "--batch", str(batch), "--barrier", barrier],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(ranks)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
        if p.returncode or line is None:
            raise SystemExit(f"validate_simulator: error: a rank failed:\n{stderr[-3000:]}")
        out.append(json.loads(line[len("RESULT "):]))
    for r in range(ranks):
        Path(f"{barrier}.{r}").unlink(missing_ok=True)
    return out


def steady_rate(result: dict[str, Any]) -> tuple[float, float]:
    """Samples/s after the first batch, and the time to the first batch, over the counted epochs."""
    counted = result["epochs"][1:] or result["epochs"]
    n = sum(e["samples"] - e["first_n"] for e in counted)
    t = sum(e["wall_s"] - e["first_s"] for e in counted)
    return n / t, sum(e["first_s"] for e in counted) / len(counted)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.validate_simulator", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m tools.validate_simulator --work /tmp/validate_simulator")
    p.add_argument("--work", type=Path, default=Path("/tmp/validate_simulator"))
    p.add_argument("--patches", type=int, default=144, help="toy patches (all splits are read; default 144)")
    p.add_argument("--shards", type=Path, help="a local packed dataset to read instead of generated toy shards")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not counted (default 4)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="loopback store: per-request latency (default 50)")
    p.add_argument("--bandwidth-mbps", type=float, default=480.0, help="loopback store: shared cap (default 480 Mb/s)")
    p.add_argument("--tolerance", type=float, default=0.25, help="largest relative error accepted (default 0.25)")
    p.add_argument("--calibration", type=Path, help="use this calibration instead of measuring one now")
    p.add_argument("--only", nargs="*", default=None, help="settings to run, e.g. local-1r-0w http-2r-2w")
    p.add_argument("--run-rank", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, default=CONFIG, help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    return p.parse_args(argv)


Row = tuple
"""One setting's line of the table: name, ranks, workers, store, measured and predicted samples/s,
error, first batch (measured, predicted), binds, share of a core, CPU per sample (measured,
predicted), cores used."""


@dataclass
class Setup:
    """What every setting shares: the options, the data, the calibration and the catalog's selection."""

    args: argparse.Namespace
    data: Path
    cal: Any  # tools.simulate.calibrate.Calibration
    catalog: Any
    selection: Any
    open_s: float
    catalog_mb: float


def run_setting(setup: Setup, src: str, ranks: int, workers: int) -> Row:
    """Measure one setting (its ranks, workers and store) and predict it with the simulator."""
    from tools.simulate.calibrate import process_share, speed_probe
    from tools.simulate.model import predict
    from tools.simulate.storage import PRESETS, Storage
    from tools.simulate.workload import Topology, build

    args, data, cal = setup.args, setup.data, setup.cal
    name = f"{src}-{ranks}r-{workers}w"
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    needed = tuple(cal.needed)
    loopback = Storage("loopback", args.latency_ms / 1000, None, args.bandwidth_mbps * 1e6 / 8, None, None,
                       remote=True)
    # Cores the setting's processes could keep busy: a loader process (rank or worker) with several
    # decode threads keeps up to `process_cores` busy (zstd and numpy release the interpreter lock),
    # a rank receiving batches from workers one more, the loopback server one.
    per_loader = cal.loader_process_cores(cal.threads)
    busy = ranks * max(1, workers) * per_loader + (ranks if workers else 0) + (1 if src == "http" else 0)
    before = process_share(data, [CONFIG], args.batch, cal.unit_cpu_s)
    server = None
    if src == "http":
        server = subprocess.Popen([sys.executable, "-m", "tools.loopback_store", str(data), "--port", "0",
                                   "--latency-ms", str(args.latency_ms), "--bandwidth-mbps", str(args.bandwidth_mbps)],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True)
        source = server.stdout.readline().split(" at ")[1].split(" ")[0]
    else:
        source = str(data)
    say(f"measuring {name} (a loader process gets {before:.2f} of a core)")
    try:
        results = measure(data, source, ranks, workers, args.epochs, args.batch)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    after = process_share(data, [CONFIG], args.batch, cal.unit_cpu_s)  # the load moves: the mean of both
    share = (before + after) / 2
    cores = min(float(os.cpu_count() or 1), share * busy)
    rates = [steady_rate(r) for r in results]
    counted = [e for r in results for e in (r["epochs"][1:] or r["epochs"])]
    # CPU seconds per sample in the ranks' processes, in uncontended seconds (the calibration's unit)
    inflation = max(1.0, speed_probe(data, 1, 0.7)["cpu_per_unit_s"] / cal.unit_cpu_s)
    cpu_per_sample = sum(e["cpu_s"] + e["children_cpu_s"] for e in counted) / sum(e["samples"] for e in counted)
    cpu_per_sample /= inflation
    measured = sum(r for r, _ in rates) / len(rates)
    first = sum(f for _, f in rates) / len(rates)
    topo = Topology(nodes=1, gpus_per_node=ranks, workers=workers, threads=cal.threads, batch_size=args.batch)
    store = loopback if src == "http" else PRESETS["local"]
    work = build(setup.catalog, setup.selection, needed, topo, remote=store.remote, shuffle=True)
    pred = predict(work, topo, store, cal, cores_per_node=cores, share=share, server_on_node=src == "http",
                   open_s=setup.open_s, catalog_mb=setup.catalog_mb)
    err = pred.samples_per_s_rank / measured - 1
    return (name, ranks, workers, src, measured, pred.samples_per_s_rank, err, first, pred.first_batch_s,
            pred.binds, share, cpu_per_sample, pred.cpu_per_sample_s, measured * ranks * cpu_per_sample)


def print_table(args: argparse.Namespace, rows: list[Row], n_samples: int, data: Path, cal: Any) -> bool:
    """The measured-vs-predicted table; True when every samples/s error is within the tolerance."""
    store_txt = f"loopback HTTP: {args.latency_ms:g} ms per request, {args.bandwidth_mbps:g} Mb/s shared"
    print(f"{n_samples} samples of {data}, LC-ALL modalities, batch {args.batch}, {cal.threads} decode threads; "
          f"{store_txt}; host {cal.host} ({cal.cores} cores, shared)")
    print()
    print("| store | ranks | workers | measured samples/s per rank | predicted | error | first batch s (measured / "
          "predicted) | binds (predicted) | CPU ms per sample (measured / predicted) | error | share of a core per process (pilot) / cores used |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, ranks, workers, src, m, pr, err, f_m, f_p, binds, bg, c_m, c_p, used in rows:
        print(f"| {src} | {ranks} | {workers} | {m:.1f} | {pr:.1f} | {100 * err:+.0f} % | {f_m:.2f} / {f_p:.2f} | "
              f"{binds} | {1000 * c_m:.1f} / {1000 * c_p:.1f} | {100 * (c_p / c_m - 1):+.0f} % | {bg:.2f} / {used:.2f} |")
    worst = max((abs(r[6]) for r in rows), default=0.0)
    worst_cpu = max((abs(r[12] / r[11] - 1) for r in rows), default=0.0)
    ok = worst <= args.tolerance
    print()
    print(f"worst error: samples/s {100 * worst:.0f} %, CPU per sample {100 * worst_cpu:.0f} % "
          f"({'within' if ok else 'outside'} {100 * args.tolerance:.0f} % on samples/s)")
    print("'share ... / cores used': what a short pilot run of one loader process got before and after the setting "
          "(the prediction's input) and what the job's processes used (CPU s / wall s, uncontended units)")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_rank:
        print("RESULT " + json.dumps(run_rank(args)), flush=True)
        return 0

    from tools.bench_loader import prepare
    from tools.simulate.calibrate import Calibration, calibrate
    from tools.simulate.cli import open_catalog

    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.shards or prepare(args.work / f"toy{args.patches}", args.patches)[1]
    if args.calibration:
        cal = Calibration.load(args.calibration)
    else:
        cal = calibrate(data, [CONFIG], args.batch, say=say)
        cal.save(args.work / "calibration.json")
    catalog, open_s, catalog_mb = open_catalog(str(data))
    selection = catalog.select(None, tuple(cal.needed))
    settings = [(src, r, w) for src in ("local", "http") for r in (1, 2) for w in (0, 2)]
    setup = Setup(args, data, cal, catalog, selection, open_s, catalog_mb)
    rows = [run_setting(setup, src, ranks, workers) for src, ranks, workers in settings
            if args.only is None or f"{src}-{ranks}r-{workers}w" in args.only]
    return 0 if print_table(args, rows, len(selection), data, cal) else 1


if __name__ == "__main__":
    sys.exit(main())
