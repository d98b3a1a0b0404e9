"""Measure this machine running the loader in the tree: what the simulator's model needs.

    python -m tools.simulate.calibrate --out calib.json [--config CFG] [--data shards/]

Every figure comes from the real `StreamingLoader` (public API only, so whatever the loader code
does now is what is measured), run in a fresh subprocess per probe on a local packed dataset (by
default the toy shards `python -m tools.bench_loader` uses) with the config's modalities:

- `local0`: 0 workers, 1 decode thread: CPU seconds per sample in the process that reads,
  decodes, preprocesses and collates (two halves of the samples, small and large, give a fixed
  cost and a cost per decoded byte);
- `threads`: the same with the config's decode threads: how much the threads speed a process up;
- `worker1`: 1 DataLoader worker: CPU per sample in the worker (shared-memory collate, pickling)
  and in the training process (receiving the batch, touching its pages), the worker's start-up;
- `http`: ranged reads through the loader's HTTP source from `tools/loopback_store.py`: CPU per
  request and per byte on the client, and in the server (which runs on the same cores here);
- `speed`: a decoding probe (one sample's members decoded over and over) gives the CPU cost of a
  unit of work when the host interferes least, and by how much contention inflates a CPU second
  at the moment of each probe (`process_share` then tells what share of a core a loader process
  gets now, for the validation on a shared host).
CPU time (not wall time) is what is measured, in uncontended seconds, so the figures hold on a
busy, shared machine; on a dedicated node the corrections are 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "seed" / "LC-ALL.yaml"


@dataclass
class Calibration:
    host: str
    cores: int
    config: str
    needed: list[str]
    batch_size: int
    threads: int
    decoded_bytes: float  # mean decoded bytes of a calibration sample
    producer_fixed_s: float  # CPU s per sample in a loader process (0 workers), fixed part
    producer_per_byte_s: float  # ... and per decoded byte
    worker_extra_s: float  # CPU s per sample a DataLoader worker spends beyond the 0-worker process
    main_per_sample_s: float  # CPU s per sample in the training process when workers hand batches over
    worker_start_cpu_s: float  # CPU s a worker spends starting (once per run: workers persist across epochs)
    thread_speedup: float  # rate with `threads` decode threads / rate with 1, one process, local reads
    request_cpu_s: float  # client CPU s per ranged HTTP request
    byte_cpu_s: float  # client CPU s per byte received
    server_request_cpu_s: float  # loopback server CPU s per request (on the same cores only in validation)
    server_byte_cpu_s: float
    unit_cpu_s: float  # uncontended CPU seconds of one unit of the decoding probe (`speed_probe`)
    rss_main_mb: float  # the training process with the loader running (torch imported)
    rss_worker_mb: float  # one DataLoader worker (resident, pages shared with the training process included)
    thread_cpu_factor: float = 1.0  # CPU per sample with `threads` decode threads / with 1 (lock hand-offs)
    process_cores: float = 1.0  # cores a loader process with `threads` threads keeps busy, relative to one thread
    pss_worker_mb: float = 0.0  # one DataLoader worker's proportional set size (its own memory)
    measured_at: float = field(default_factory=time.time)

    def producer_cpu_s(self, decoded_bytes: float, threads: int = 1) -> float:
        """CPU seconds per sample in a loader process reading local shards (0 workers)."""
        factor = self.thread_cpu_factor if threads > 1 else 1.0
        return (self.producer_fixed_s + self.producer_per_byte_s * decoded_bytes) * factor

    def loader_process_cores(self, threads: int) -> float:
        """Cores one loader process with `threads` decode threads keeps busy (zstd and numpy release
        the interpreter lock; its Python parts still run one at a time)."""
        return min(self.process_cores, float(threads)) if threads > 1 else 1.0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------------------------
# Probes (each runs in its own process)
# --------------------------------------------------------------------------------------------
def load_config(config: list[Path], data: Path, batch: int | None) -> dict[str, Any]:
    from trainer import load_train_config

    overrides = [f"data.source={data}"] + ([f"hyperparams.batch_size={batch}"] if batch else [])
    return load_train_config(config, overrides)


def _touch(batch: dict) -> None:
    """Read every page of a batch, as the copy to the GPU does (first touch of shared memory)."""
    import torch

    for v in batch.values():
        if torch.is_tensor(v) and v.numel():
            flat = v.reshape(-1).view(torch.uint8) if v.dtype != torch.bool else v.reshape(-1)
            flat[:: 4096].sum()


def probe_loader(cfg: dict[str, Any], workers: int, threads: int, patch_ids: list[str] | None,
                 source: str | None = None) -> dict[str, float]:
    """Two epochs of the real loader (the first warms the page cache); the second is measured."""
    import torch

    from trainer.data import StreamingLoader

    torch.set_num_threads(1)
    cfg = copy.deepcopy(cfg)
    cfg["data"]["decode_threads"] = threads
    if source:
        cfg["data"]["source"] = source
    if patch_ids is not None:
        cfg["data"]["select"]["patch_ids"] = patch_ids
    ld = StreamingLoader.from_config(cfg, None, rank=0, world_size=1, num_workers=workers, shuffle=True, augment=False)
    out: dict[str, float] = {}
    pss, next_pss = 0.0, 0.0
    for epoch in range(2):
        c0, t0 = time.process_time(), time.perf_counter()
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        n, first = 0, None
        for batch in ld:
            if first is None:
                first = time.perf_counter() - t0
            _touch(batch)
            n += len(batch["patch_id"])
            if time.perf_counter() >= next_pss:  # reading smaps costs ms: sample it, don't charge it per batch
                pss = max(pss, _children_pss_mb())
                next_pss = time.perf_counter() + 0.5
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = {"samples": n, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
               "children_cpu_s": (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime), "first_s": first or 0.0,
               "batch": ld.batch_size}
    out["rss_main_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_worker_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["pss_worker_mb"] = pss
    return out


def _children_pss_mb() -> float:
    """The largest proportional set size of this process's children (a worker's own memory: pages
    it shares with the training process after the fork count for half)."""
    import psutil

    best = 0.0
    for child in psutil.Process().children():
        try:
            best = max(best, child.memory_full_info().pss / 2**20)
        except (psutil.Error, AttributeError):
            pass
    return best


def probe_http(root: Path) -> dict[str, float]:
    """Client and server CPU per ranged request and per byte, through the loader's HTTP source."""
    from tools.loopback_store import LoopbackStore  # noqa: F401  (the server runs in a subprocess)
    from packer.storage.read import open_source

    shard = next(p for p in sorted(root.rglob("*.tar")))
    rel = shard.relative_to(root).as_posix()
    server = subprocess.Popen([sys.executable, "-m", "tools.loopback_store", str(root), "--port", "0"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" at ")[1].split(" ")[0]
        src = open_source(url)
        size = src.size(rel)
        src.read_range(rel, 0, 1024)  # connection set up
        out = {}
        for kind, length, count in (("small", 1024, 300), ("large", min(size, 4 << 20), 30)):
            s0, c0 = _proc_cpu(server.pid), time.process_time()
            for i in range(count):
                src.read_range(rel, (i * 7919) % max(1, size - length), length)
            out[f"{kind}_client_s"] = (time.process_time() - c0) / count
            out[f"{kind}_server_s"] = (_proc_cpu(server.pid) - s0) / count
            out[f"{kind}_bytes"] = length
        return out
    finally:
        server.terminate()
        server.wait(10)


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SPEED_PROBE = """
import json, sys, time
from packer.shardformat.encoding import decode_array
path, ranges, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
with open(path, "rb") as f:
    members = []
    for off, size in ranges:
        f.seek(off)
        members.append(f.read(size))
for m in members:
    decode_array(m)
c0, t0, n = time.process_time(), time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    for m in members:
        decode_array(m)
    n += 1
print(json.dumps({"units": n, "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}))
"""


def speed_probe(data: Path, processes: int, seconds: float = 1.5) -> dict[str, float]:
    """Decode one sample's members over and over in `processes` processes at once for `seconds`.

    Returns the units of decoding work done per second by all of them, and the CPU seconds a unit
    took. Decoding is what the loader spends its CPU on; the probe tells how much of it the host
    lets this job do right now with this many processes (on a shared host a job's share of the
    cores need not grow with its process count, and contention makes each CPU second do less).
    """
    import pyarrow.parquet as pq

    from packer.shardformat.columns import member_columns
    from packer.schema import INDEX_FILE, MODALITY_NAMES

    row = pq.read_table(Path(data) / INDEX_FILE).slice(0, 1).to_pylist()[0]
    ranges = [(row[member_columns(m)[0]], row[member_columns(m)[1]]) for m in MODALITY_NAMES
              if row.get(member_columns(m)[1])]
    path = str(Path(data) / row["shard"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SPEED_PROBE, path, json.dumps(ranges), str(seconds)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, text=True) for _ in range(max(1, processes))]
    results = [json.loads(p.communicate()[0]) for p in procs]
    units = sum(r["units"] for r in results)
    return {"units_per_s": sum(r["units"] / r["wall_s"] for r in results),
            "cpu_per_unit_s": sum(r["cpu_s"] for r in results) / max(1, units)}


def clean_unit_cpu(data: Path, rounds: int = 3) -> float:
    """CPU seconds of one unit of the speed probe when the host interferes least (the minimum of a few runs)."""
    return min(speed_probe(data, 1, 1.0)["cpu_per_unit_s"] for _ in range(rounds))


def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    if args.probe == "http":
        return probe_http(args.data)
    cfg = load_config(args.config, args.data, args.batch)
    ids = json.loads(args.patch_ids) if args.patch_ids else None
    return probe_loader(cfg, args.workers, args.threads, ids)


def _subprocess(argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tools.simulate.calibrate", "--probe", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"calibration probe {argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])



def process_share(data: Path, config: list[Path], batch: int, unit_cpu_s: float, samples: int = 24) -> float:
    """The share of a core one loader process gets now: a short run of the real loader (0 workers,
    one thread) in a fresh process, its CPU seconds (uncontended units) per wall second.

    On a dedicated node that is about 1; on a shared host it is what the scheduler leaves a
    process that, like the loader, both computes and waits (a busy-loop probe gets less there).
    """
    from trainer.data import Catalog
    from packer.storage.read import open_source

    ids = Catalog(open_source(str(data))).select(None, ()).patch_ids[:samples]
    factor = max(1.0, speed_probe(data, 1, 0.5)["cpu_per_unit_s"] / unit_cpu_s)
    got = _subprocess(["loader", "--workers", "0", "--threads", "1", "--data", str(data), "--batch", str(batch),
                       "--config", *map(str, config), "--patch-ids", json.dumps(ids)])
    return min(1.0, max(0.02, got["cpu_s"] / factor / got["wall_s"]))


# --------------------------------------------------------------------------------------------
# The calibration
# --------------------------------------------------------------------------------------------
def calibrate(data: Path, config: list[Path], batch: int | None = None, threads: int | None = None,
              say=lambda msg: None) -> Calibration:
    from tools.simulate.workload import decoded_bytes
    from trainer.data import Catalog
    from trainer.data import SampleSpec
    from packer.storage.read import open_source

    cfg = load_config(config, data, batch)
    spec = SampleSpec.from_config(cfg, augment=False)
    needed = tuple(spec.needed_modalities)
    threads = threads or cfg["data"]["decode_threads"]
    batch = batch or cfg["hyperparams"]["batch_size"]
    catalog = Catalog(open_source(str(data)))
    sel = catalog.select(None, needed)
    dec = decoded_bytes(catalog, sel, needed)
    by_size = [sel.patch_ids[i] for i in dec.argsort()]
    half = len(by_size) // 2
    small, large = by_size[:half], by_size[half:]
    dec_of = dict(zip(sel.patch_ids, dec))
    common = ["--data", str(data), "--batch", str(batch), "--config", *map(str, config)]

    say("calibrating: the speed of an uncontended CPU second here (decoding probe)")
    unit = clean_unit_cpu(data)

    def deflated(result: dict[str, Any]) -> dict[str, Any]:
        """CPU figures in uncontended seconds: on a shared host a CPU second does less when others
        run; a short decoding probe right before says by how much."""
        factor = max(1.0, speed_probe(data, 1, 0.7)["cpu_per_unit_s"] / unit)
        return {k: v / factor if k.endswith(("cpu_s", "client_s", "server_s")) else v
                for k, v in result.items()}

    def loader(workers: int, n_threads: int, ids: list[str] | None) -> dict[str, Any]:
        extra = ["--patch-ids", json.dumps(ids)] if ids is not None else []
        return deflated(_subprocess(["loader", "--workers", str(workers), "--threads", str(n_threads), *common, *extra]))

    say("calibrating: one loader process, one thread (small and large samples)")
    lo, hi = loader(0, 1, small), loader(0, 1, large)
    d_lo, d_hi = (sum(dec_of[p] for p in ids) / len(ids) for ids in (small, large))
    c_lo, c_hi = lo["cpu_s"] / lo["samples"], hi["cpu_s"] / hi["samples"]
    per_byte = (c_hi - c_lo) / (d_hi - d_lo) if d_hi > d_lo else 0.0
    mean_dec = float(dec.mean())
    c_mean = (c_lo * lo["samples"] + c_hi * hi["samples"]) / (lo["samples"] + hi["samples"])
    if per_byte <= 0 or c_lo - per_byte * d_lo <= 0:  # noise: fall back to a cost proportional to the bytes
        per_byte, fixed = c_mean / mean_dec, 0.0
    else:
        fixed = c_lo - per_byte * d_lo
    say(f"calibrating: one loader process, {threads} decode threads")
    one = loader(0, 1, None)
    many = loader(0, threads, None) if threads > 1 else one
    speedup = (one["wall_s"] / one["samples"]) / (many["wall_s"] / many["samples"])
    cpu_factor = max(1.0, (many["cpu_s"] / many["samples"]) / (one["cpu_s"] / one["samples"]))
    # How many cores' worth the T-thread process kept busy, relative to one thread: a ratio of CPU
    # used per wall second, which a share of the host scales alike in both runs.
    process_cores = min(max((many["cpu_s"] / many["wall_s"]) / (one["cpu_s"] / one["wall_s"]), 1.0), float(threads))
    say("calibrating: one DataLoader worker (all samples and half of them: per sample and per start)")
    w1, w1_half = loader(1, 1, None), loader(1, 1, by_size[::2])
    dn = w1["samples"] - w1_half["samples"]
    worker_cpu = (w1["children_cpu_s"] - w1_half["children_cpu_s"]) / dn
    if worker_cpu <= 0:  # noise: no start-up cost can be told apart
        worker_cpu = w1["children_cpu_s"] / w1["samples"]
    worker_start_cpu = max(0.0, w1["children_cpu_s"] - worker_cpu * w1["samples"])
    worker_extra = max(0.0, worker_cpu - one["cpu_s"] / one["samples"])
    main = (w1["cpu_s"] - w1_half["cpu_s"]) / dn
    if main <= 0:
        main = w1["cpu_s"] / w1["samples"]
    say("calibrating: HTTP requests")
    http = deflated(_subprocess(["http", "--data", str(data)]))
    per_byte_http = max(0.0, (http["large_client_s"] - http["small_client_s"]) / (http["large_bytes"] - http["small_bytes"]))
    req = max(0.0, http["small_client_s"] - per_byte_http * http["small_bytes"])
    s_byte = max(0.0, (http["large_server_s"] - http["small_server_s"]) / (http["large_bytes"] - http["small_bytes"]))
    s_req = max(0.0, http["small_server_s"] - s_byte * http["small_bytes"])
    return Calibration(
        host=platform.node(), cores=os.cpu_count() or 1, config=" ".join(map(str, config)), needed=list(needed),
        batch_size=batch, threads=threads, decoded_bytes=mean_dec, producer_fixed_s=fixed,
        producer_per_byte_s=per_byte, worker_extra_s=worker_extra, main_per_sample_s=main,
        worker_start_cpu_s=worker_start_cpu, thread_speedup=speedup, thread_cpu_factor=cpu_factor,
        process_cores=process_cores, request_cpu_s=req, byte_cpu_s=per_byte_http,
        server_request_cpu_s=s_req, server_byte_cpu_s=s_byte, unit_cpu_s=unit,
        rss_main_mb=max(one["rss_main_mb"], w1["rss_main_mb"]), rss_worker_mb=w1["rss_worker_mb"],
        pss_worker_mb=w1.get("pss_worker_mb", 0.0))


def default_data(work: Path) -> Path:
    """The toy shards of `tools.bench_loader` (48 patches, every modality), made once under `work`."""
    from tools.bench_loader import prepare

    return prepare(work, 48)[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.simulate.calibrate", description=__doc__.split("\n\n")[0],
                                epilog="example: python -m tools.simulate.calibrate --out calib.json")
    p.add_argument("--out", type=Path, help="where to write the calibration (JSON)")
    p.add_argument("--data", type=Path, help="a local packed dataset (default: toy shards made under --work)")
    p.add_argument("--work", type=Path, default=Path("/tmp/flair-simulate"))
    p.add_argument("--config", type=Path, nargs="+", default=[DEFAULT_CONFIG], help="config (default LC-ALL)")
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--threads", type=int, help="decode threads (default: the config's data.decode_threads)")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--patch-ids", help=argparse.SUPPRESS)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        args.threads = args.threads or 1
        print("RESULT " + json.dumps(run_probe(args)), flush=True)
        return 0
    data = args.data or default_data(args.work)
    cal = calibrate(data, args.config, args.batch, args.threads, say=lambda m: print(m, file=sys.stderr))
    if args.out:
        cal.save(args.out)
    print(json.dumps(asdict(cal), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
