"""Benchmark of the streaming loader against a per-file baseline shaped like the reference loader,
and against the loaders of earlier revisions ("today"), measured in the same run.

    python -m tools.bench_loader --patches 48 --work /tmp/bench_loader [--configs all,aerial,s2] [--batch-sizes 1,8,32]

1. Generates a toy tree (`tools.flair_toy`) and packs it (`packer.pack`), unless already in --work;
   with `--today REV[,REV...]` (default: the revision before shard format 2) also checks each
   revision's code out into --work (`git archive`) and packs the same tree with its packer.
2. Configs: `all` (all seven input modalities and both label tasks), `aerial` (AERIAL_RGBI +
   CoSIA) and `s2` (SENTINEL2_TS + CoSIA), each with the reference's default preprocessing (S2
   cloud/snow filter, DSM + height, custom normalisation).
3. Settings, at every batch size of `--batch-sizes` (the rows that answer a side question -- today's
   loader, checksums off, S3, class-index labels, RSS on half the data -- at the reference batch
   size only, 8 when listed), each in a fresh subprocess (own start-up, own peak RSS), each after an untimed
   warm-up pass so all see the same warm page cache, interleaved over `--rounds` rounds (the
   best round is kept) so that load from other users of the host hits every setting alike;
   throughput = samples delivered to the training loop ready for the model's forward (float32
   inputs, all preprocessing done, wherever it runs), over whole epochs:
   (a) baseline: a map-style Dataset reading the GeoTIFF tree per sample with rasterio and
       preprocessing per sample like the reference's `flair_dataset` (float64 normalisation,
       one-hot float labels, float32 tensors), padded collate; 0 and 2 DataLoader workers.
       (a') the same with class-index labels (our label format), for a like-for-like view.
   (today) the loader of each --today revision on its own pack of the same tree.
   (b) this loader on the shards: local files and through a local S3 server (moto), 0 and 2
       worker processes x 1 or 2 decode threads; normalisation batched in the main process.
       One more run without the per-member checksums gives their cost, and one on half of the
       samples shows that the per-worker peak RSS does not depend on the dataset size.
   (b+) the same with the opt-in decoded cache (`data.decoded_cache`, filled by the warm-up
       epoch): not a default, so kept out of the "best b" ratios and compared on its own line.
   (b~) the same on a pack of the same tree made with the opt-in `flair-pack --shuffle`
       (byte-shuffled Blosc members for the wider dtypes): also compared on its own line.
   (h, h~, h-today) this loader on both packs (h~: all and s2) and today's loaders, delivering
       batches as handed over to the training process, without `to_model_inputs`: the CPU side
       of training on a GPU, where the normalisation runs on the device (not measured here).
4. Where the time goes (one thread, per sample): read (ranged reads + member checksums),
   decode (zstd into the reused arena, .npy header), preprocess, collate (into a ring slot),
   hand-over (what crosses to the training process and its tensors), normalise; and for the
   baseline: rasterio read vs preprocessing.
Prints markdown tables (one column of samples/s per batch size) and, per batch size, the ratios
best b / best a (against the per-file baseline) and best with 2 workers / best with 0 workers; the
last line of each config is `ratio: <best b / best a>` at the reference batch size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ALL_INPUTS = ["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS",
              "SENTINEL1-DESC_TS"]
TASKS = ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"]
CONFIGS = {
    "all": (ALL_INPUTS, TASKS),
    "aerial": (["AERIAL_RGBI"], ["AERIAL_LABEL-COSIA"]),
    "s2": (["SENTINEL2_TS"], ["AERIAL_LABEL-COSIA"]),
}
"""Benchmark configs: (inputs, tasks)."""
TODAY_REV = "28fc08b"
"""The last revision before shard format 2 and the shared-memory hand-over (its loader is "today")."""


# --------------------------------------------------------------------------------------------
# Data and config
# --------------------------------------------------------------------------------------------
def prepare(work: Path, patches: int) -> tuple[Path, Path]:
    """The tree, its default pack and (beside it, `shuffled_pack`) its `--shuffle` pack."""
    from packer.pack import pack_dataset
    from packer.shardformat.names import FORMAT_VERSION, SHUFFLE_FORMAT_VERSION
    from tools.flair_toy import ToyConfig, generate

    tree, shards = work / "tree", work / "shards"
    if not (tree / "GLOBAL_ALL_MTD").is_dir():
        generate(tree, ToyConfig(patches=patches, domains=2, rois_per_domain=4, seed=0, t_s2=(20, 60),
                                 t_s1=(20, 60), progress=True, overwrite=True))
    for out, version, options in ((shards, FORMAT_VERSION, {}), (shuffled_pack(shards), SHUFFLE_FORMAT_VERSION,
                                                                  {"shuffle": True})):
        if not (out / "manifest.json").is_file() or json.loads((out / "manifest.json").read_text()).get(
                "format_version") != version:
            shutil.rmtree(out, ignore_errors=True)
            pack_dataset(tree, out, shard_size=64_000_000, progress=True, **options)
    return tree, shards


def shuffled_pack(shards: Path) -> Path:
    return shards.with_name(shards.name + "-shuffle")


def revision_of(checkout: tuple[Path, Path]) -> str:
    """The revision a `prepare_today` checkout holds (its directory is `today-<rev>`)."""
    return checkout[0].name.split("-", 1)[1]


def prepare_today(work: Path, tree: Path, rev: str) -> tuple[Path, Path] | None:
    """Revision `rev`'s code (git archive) and its own pack of `tree`, or None if git cannot provide it."""
    src, shards = work / f"today-{rev}", work / f"shards-{rev}"
    if not (src / "trainer").is_dir():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True)
        if archive.returncode:
            print(f"bench_loader: cannot check out {rev} ({archive.stderr.decode().strip()}); no 'today' rows",
                  file=sys.stderr)
            return None
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    if not (shards / "manifest.json").is_file():
        code = ("import sys; from packer.pack import pack_dataset; "
                "pack_dataset(sys.argv[1], sys.argv[2], shard_size=64_000_000, progress=False)")
        subprocess.run([sys.executable, "-c", code, str(tree), str(shards)], cwd=src,
                       env=dict(os.environ, PYTHONPATH=str(src)), check=True)
    return src, shards


def bench_config(shards: Path, config: str = "all") -> dict[str, Any]:
    import trainer
    from trainer.config import load_config

    inputs, tasks = CONFIGS[config]
    # The configs of the checkout whose code runs (an earlier revision validates its own keys).
    cfg = load_config(Path(trainer.__file__).resolve().parents[1] / "configs" / "flair-hub")
    for m in cfg["modalities"]["inputs"]:
        cfg["modalities"]["inputs"][m] = m in inputs
    cfg["labels"] = list(tasks)
    cfg["data"]["source"] = str(shards)
    cfg["hyperparams"]["batch_size"] = 4
    from trainer.config import validate_config

    return validate_config(cfg)


# --------------------------------------------------------------------------------------------
# (a) the per-file baseline, shaped like the reference's flair_dataset
# --------------------------------------------------------------------------------------------
class TreeDataset:
    """Per sample: rasterio reads of each file, then the reference's per-sample preprocessing."""

    def __init__(self, tree: Path, patch_ids: list[str], cfg: dict[str, Any], one_hot: bool) -> None:
        from packer.metadata import read_series_dates
        from trainer.data.sample import SampleSpec

        self.tree, self.ids, self.cfg, self.one_hot = tree, patch_ids, cfg, one_hot
        self.spec = SampleSpec.from_config(cfg, augment=False)
        mtd = tree / "GLOBAL_ALL_MTD"
        self.dates = {m: read_series_dates(mtd, m) for m in self.spec.series}
        self.n_classes = {t: len(cfg["labels_configs"][t]["value_name"]) for t in self.spec.tasks}
        self.timing = {"read": 0.0, "preprocess": 0.0}

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, pid: str, name: str, channels=None) -> np.ndarray:
        import rasterio

        from packer.schema import PatchId

        with rasterio.open(self.tree / PatchId.parse(pid).relative_path(name)) as f:
            return f.read(channels) if channels else f.read()

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from trainer.data import preprocess as pp
        from trainer.data.sample import S2_MASK, dates_key, preprocess_series

        pid, spec = self.ids[i], self.spec
        t0 = time.thread_time()
        raw = {m: self._read(pid, m, list(spec.channels.get(m) or []) or None if m in spec.mono else None)
               for m in spec.inputs}
        if spec.filter_s2:
            raw[S2_MASK] = self._read(pid, S2_MASK)
        labels = {t: self._read(pid, t, [spec.label_channels[t]])[0] for t in spec.tasks}
        t1 = time.thread_time()
        out: dict[str, Any] = {}
        for m in spec.inputs:
            if m == "DEM_ELEV":
                arr = pp.calc_elevation(raw[m], spec.stack_dsm) if spec.calc_elevation else raw[m]
            elif m in spec.series:
                arr, out[dates_key(m)] = preprocess_series(m, raw[m], self.dates[m][pid], spec, raw.get(S2_MASK))
            else:
                arr = raw[m]
            if m in spec.mono:
                arr = pp.normalize(arr, spec.norm_type, spec.means[m], spec.stds[m])
            out[m] = arr
        for t, lab in labels.items():
            out[t] = np.stack([lab == c for c in range(self.n_classes[t])]) if self.one_hot else lab.astype(np.int64)
        res = {k: torch.tensor(v, dtype=torch.float32 if (k not in self.spec.tasks or self.one_hot) else torch.int64)
               for k, v in out.items()}
        res["patch_id"] = pid
        self.timing["read"] += t1 - t0
        self.timing["preprocess"] += time.thread_time() - t1
        return res


def pad_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack, padding series and dates along T with zeros (as the reference's pad_collate_flair)."""
    import torch

    batch: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if not torch.is_tensor(vals[0]):
            batch[k] = vals
        elif k.endswith("_TS") or k.endswith("_DATES"):
            t = max(v.shape[0] for v in vals)
            batch[k] = torch.stack([torch.nn.functional.pad(v, [0, 0] * (v.dim() - 1) + [0, t - v.shape[0]])
                                    for v in vals])
        else:
            batch[k] = torch.stack(vals)
    return batch


# --------------------------------------------------------------------------------------------
# One setting, run in a subprocess
# --------------------------------------------------------------------------------------------
def run_setting(args: argparse.Namespace) -> dict[str, Any]:
    import resource

    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(args.torch_threads)
    if args.sharing:  # how worker tensors reach the main process: file_descriptor (default) or file_system
        torch.multiprocessing.set_sharing_strategy(args.sharing)
    tree, shards = Path(args.tree), Path(args.shards)
    cfg = bench_config(shards, args.config)
    if args.kind == "baseline":
        from trainer.data import Catalog, open_source

        ids = Catalog(open_source(str(shards))).select(None, ()).patch_ids
        ds = TreeDataset(tree, ids, cfg, one_hot=args.one_hot)
        kw = {"prefetch_factor": 2} if args.workers else {}
        make = lambda: DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,  # noqa: E731
                                  collate_fn=pad_collate, drop_last=False, **kw)
        finish = lambda b: b  # noqa: E731  (already float32 tensors)
    else:
        from trainer.data import StreamingLoader

        cfg["data"]["decode_threads"] = args.threads
        if args.decoded_cache:  # filled by the untimed warm-up epoch, read by the timed ones
            cfg["data"]["decoded_cache"] = args.decoded_cache
            cfg["data"]["decoded_cache_min_free_gb"] = 1
        if args.half:  # same loader on half the samples: its per-worker RSS must not shrink with N
            from trainer.data import Catalog, open_source

            ids = Catalog(open_source(str(shards))).select(None, ()).patch_ids
            cfg["data"]["select"]["patch_ids"] = ids[: len(ids) // 2]
        if args.kind == "s3":
            cfg["data"]["source"] = args.s3_url
            cfg["data"]["s3_endpoint_url"] = args.s3_endpoint
        loader = StreamingLoader.from_config(cfg, None, rank=0, world_size=1, num_workers=args.workers,
                                             batch_size=args.batch_size, shuffle=True, augment=False)
        if args.no_member_checks:
            loader.dataset.reader.check_members = False
        make = lambda: loader  # noqa: E731
        if args.to_handover:  # what a GPU trainer's CPU does: the normalisation runs on the device
            finish = lambda b: b  # noqa: E731
        else:
            finish = lambda b: loader.to_model_inputs(b, "cpu")  # noqa: E731
    n_samples, best = 0, 0.0
    for rep in range(args.epochs + 1):  # first pass = warm-up (page cache, imports), not timed
        t0, n = time.perf_counter(), 0
        for batch in make():
            inputs = finish(batch)
            n += len(inputs["patch_id"])
        dt = time.perf_counter() - t0
        if rep:
            best = max(best, n / dt)
            n_samples = n
    return {"samples_per_s": best, "samples": n_samples,
            "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if args.workers else None}


def spawn(tree: Path, shards: Path, kind: str, workers: int, threads: int = 1, one_hot: bool = True,
          epochs: int = 1, s3: tuple[str, str] | None = None, half: bool = False,
          sharing: str | None = None, config: str = "all", today: tuple[Path, Path] | None = None,
          no_member_checks: bool = False, batch_size: int = 4, torch_threads: int = 1,
          decoded_cache: bool = False, shuffled: bool = False, to_handover: bool = False) -> dict[str, Any]:
    # This file runs as a script so that, for "today", the packages come from that checkout.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", "--tree", str(tree), "--shards", str(shards),
           "--kind", kind, "--workers", str(workers), "--threads", str(threads), "--epochs", str(epochs),
           "--config", config, "--batch-size", str(batch_size), "--torch-threads", str(torch_threads)]
    root = REPO
    if kind == "today":
        root, shards_today = today
        cmd[cmd.index("--shards") + 1] = str(shards_today)
        cmd[cmd.index("--kind") + 1] = "local"
    if shuffled:
        cmd[cmd.index("--shards") + 1] = str(shuffled_pack(shards))
    if no_member_checks:
        cmd.append("--no-member-checks")
    if to_handover:
        cmd.append("--to-handover")
    if decoded_cache:
        cache = shards.parent / f"decoded-cache-{config}"
        shutil.rmtree(cache, ignore_errors=True)  # each run fills its own in the warm-up epoch
        cmd += ["--decoded-cache", str(cache)]
    if one_hot:
        cmd.append("--one-hot")
    if half:
        cmd.append("--half")
    if sharing:
        cmd += ["--sharing", sharing]
    if s3:
        cmd += ["--s3-url", s3[0], "--s3-endpoint", s3[1]]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"setting {config}/{kind}/{workers}w/{threads}t/batch {batch_size} failed:\n"
                           f"{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Where the time goes
# --------------------------------------------------------------------------------------------
def breakdown(tree: Path, shards: Path, config: str = "all",
              bs: int = 4) -> tuple[dict[str, float], dict[str, float], float]:
    """Per-sample milliseconds of each stage of this loader, one thread, warm cache (CPU time), batch `bs`."""
    import pickle

    from multiprocessing.reduction import ForkingPickler

    import torch

    from packer.shardformat.encoding import Arena
    from trainer.data import StreamingLoader
    from trainer.data.collate import BatchBuilder, batch_from_buffer, batch_keys
    from trainer.data.sample import preprocess_sample

    torch.set_num_threads(1)
    cfg = bench_config(shards, config)
    loader = StreamingLoader.from_config(cfg, None, rank=0, world_size=1, num_workers=0, batch_size=bs,
                                         shuffle=False, augment=False)
    loader._prepare_ring()
    ds, ring, reader = loader.dataset, loader._ring, loader.dataset.reader
    rows = list(range(len(loader.selection) // bs * bs))
    for r in rows:  # warm-up
        reader.read_members(r)
    clock = time.thread_time
    t = dict.fromkeys(["read", "decode", "preprocess", "collate", "hand-over", "normalise"], 0.0)
    arena, raw_bytes = Arena(), 0
    for start in range(0, len(rows), bs):
        slot = ring.acquire(0)
        builder = BatchBuilder(ds.layout, ring.slot(slot), [], np.ones(bs, bool))
        for i, r in enumerate(rows[start:start + bs]):
            arena.reset()
            t0 = clock()
            members = reader.read_members(r)
            t1 = clock()
            meta = reader._meta(r, members.pop("json"))
            arrays = {k: reader._array(r, k, v, arena) for k, v in members.items()}
            t2 = clock()
            sample = preprocess_sample({"patch_id": loader.selection.patch_ids[r], "meta": meta, "arrays": arrays},
                                       loader.spec)
            t3 = clock()
            builder.put(i, sample)
            t4 = clock()
            raw_bytes += sum(a.nbytes for a in arrays.values())
            t["read"] += t1 - t0
            t["decode"] += t2 - t1
            t["preprocess"] += t3 - t2
            t["collate"] += t4 - t3
        t0 = clock()
        parts = builder.finish()
        t1 = clock()
        # What crosses from a worker (the pickled description), and the trainer's views of the slot.
        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(parts)
        got = pickle.loads(buf.getvalue())
        view, _ = ring.lend(slot)
        batch = batch_from_buffer(got, view, batch_keys(loader.spec))
        t2 = clock()
        loader.to_model_inputs(batch, "cpu")
        t3 = clock()
        del batch, view
        t["collate"] += t1 - t0
        t["hand-over"] += t2 - t1
        t["normalise"] += t3 - t2
    n = len(rows)
    ours = {k: 1000 * v / n for k, v in t.items()}
    base_ds = TreeDataset(tree, loader.selection.patch_ids, cfg, one_hot=True)
    for i in range(len(base_ds)):  # warm-up then timed
        base_ds[i]
    base_ds.timing = {"read": 0.0, "preprocess": 0.0}
    for i in range(len(base_ds)):
        base_ds[i]
    base = {k: 1000 * v / len(base_ds) for k, v in base_ds.timing.items()}
    loader.close()
    return ours, base, raw_bytes / n / 1e6


# --------------------------------------------------------------------------------------------
# S3 server for the remote setting
# --------------------------------------------------------------------------------------------
def start_s3(shards: Path):
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[k] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    for f in shards.rglob("*"):
        if f.is_file() and ".pack" not in f.parts:
            client.upload_file(str(f), "bench", f"shards/{f.relative_to(shards).as_posix()}")
    return server, "s3://bench/shards", endpoint


# --------------------------------------------------------------------------------------------
def reference_batch_size(batch_sizes: list[int]) -> int:
    """The batch size of the side-question rows and of the stage breakdown: 8 when measured."""
    return 8 if 8 in batch_sizes else batch_sizes[len(batch_sizes) // 2]


Setting = tuple[str, str, int, dict]
"""(group, label, batch size, spawn keywords)."""


def settings_for(config: str, batch_sizes: list[int], today: list[tuple[Path, Path]],
                 s3: tuple[str, str] | None) -> list[Setting]:
    """Every setting of one config: the core rows at every batch size, the side questions at the
    reference batch size."""
    full = config == "all"
    ref = reference_batch_size(batch_sizes)
    core: list[tuple[str, str, dict]] = [
        ("a", "per-file rasterio, reference preprocessing, one-hot labels, 0 workers", dict(kind="baseline", workers=0)),
        ("a", "per-file rasterio, reference preprocessing, one-hot labels, 2 workers", dict(kind="baseline", workers=2)),
        ("b", "shards, local, 0 workers, 1 thread", dict(kind="local", workers=0, threads=1)),
        ("b", "shards, local, 0 workers, 2 decode threads", dict(kind="local", workers=0, threads=2)),
        ("b", "shards, local, 2 workers, 1 thread each", dict(kind="local", workers=2, threads=1)),
    ]
    side: list[tuple[str, str, dict]] = []
    if full:
        side.append(("a'", "per-file rasterio, reference preprocessing, class-index labels, 2 workers",
                     dict(kind="baseline", workers=2, one_hot=False)))
    for checkout in today:
        rev = revision_of(checkout)
        side += [("today", f"loader at {rev}, its own pack, 0 workers, {t}",
                  dict(kind="today", workers=0, threads=n, today=checkout))
                 for n, t in ((1, "1 thread"), (2, "2 decode threads"))]
        side.append(("today", f"loader at {rev}, its own pack, 2 workers, 1 thread each",
                     dict(kind="today", workers=2, threads=1, today=checkout)))
    if full:
        side += [
            ("b", "shards, local, 2 workers, 2 decode threads each", dict(kind="local", workers=2, threads=2)),
            ("b+", "shards, local, 0 workers, 2 decode threads, opt-in decoded cache (data.decoded_cache)",
             dict(kind="local", workers=0, threads=2, decoded_cache=True)),
            ("b+", "shards, local, 2 workers, 1 thread each, opt-in decoded cache (data.decoded_cache)",
             dict(kind="local", workers=2, threads=1, decoded_cache=True)),
            ("b-", "shards, local, 0 workers, 2 decode threads, member checksums off",
             dict(kind="local", workers=0, threads=2, no_member_checks=True)),
            ("b-", "shards, local, 2 workers, 1 thread each, member checksums off",
             dict(kind="local", workers=2, threads=1, no_member_checks=True)),
        ]
    if config in ("all", "s2"):  # the configs with a modality of a wider dtype
        side += [("b~", "shards packed with the opt-in --shuffle, local, 0 workers, 2 decode threads",
                  dict(kind="local", workers=0, threads=2, shuffled=True)),
                 ("b~", "shards packed with the opt-in --shuffle, local, 2 workers, 1 thread each",
                  dict(kind="local", workers=2, threads=1, shuffled=True))]
    if full:
        if s3 is not None:
            side += [("b", "shards, S3 (local moto server), 0 workers, 2 decode threads",
                      dict(kind="s3", workers=0, threads=2, s3=s3)),
                     ("b", "shards, S3 (local moto server), 2 workers, 2 decode threads each",
                      dict(kind="s3", workers=2, threads=2, s3=s3))]
        side.append(("b", "shards, local, 2 workers, 2 decode threads each, half of the samples (RSS check)",
                     dict(kind="local", workers=2, threads=2, half=True)))
    # The same streams up to the hand-over: what the CPU of a GPU trainer does, where
    # to_model_inputs' normalisation runs on the device (not run here). Today's loaders also
    # normalised after the hand-over, so these rows compare like with like.
    for w, t, how in ((0, 2, "0 workers, 2 decode threads"), (2, 1, "2 workers, 1 thread each")):
        side.append(("h", f"to the hand-over: shards, local, {how}",
                     dict(kind="local", workers=w, threads=t, to_handover=True)))
        if config in ("all", "s2"):
            side.append(("h~", f"to the hand-over: --shuffle pack, local, {how}",
                         dict(kind="local", workers=w, threads=t, shuffled=True, to_handover=True)))
        for checkout in today:
            side.append(("h-today", f"to the hand-over: loader at {revision_of(checkout)}, its own pack, {how}",
                         dict(kind="today", workers=w, threads=t, today=checkout, to_handover=True)))
    out = [(g, label, bs, dict(kw, config=config, batch_size=bs)) for bs in batch_sizes for g, label, kw in core]
    out += [(g, label, ref, dict(kw, config=config, batch_size=ref)) for g, label, kw in side]
    return out


Results = dict[tuple[str, int], tuple[str, dict]]
"""(label, batch size) -> (group, result) of one config."""


def best_of(results: Results, bs: int, keep: Callable[[str, str], bool]) -> float:
    """Best samples/s at batch `bs` among the rows whose (group, label) `keep` accepts."""
    return max((r["samples_per_s"] for (label, b), (g, r) in results.items() if b == bs and keep(g, label)),
               default=float("nan"))


def print_config(config: str, results: Results, batch_sizes: list[int], n_samples: int, mb: float,
                 ours: dict[str, float], base: dict[str, float], ours_shuffled: dict[str, float] | None = None) -> None:
    inputs, tasks = CONFIGS[config]
    ref = reference_batch_size(batch_sizes)
    print(f"\n### config `{config}`: {', '.join(inputs)} + {', '.join(tasks)}; {n_samples} samples, "
          f"{mb:.2f} MB of decoded arrays per sample, {os.cpu_count()} CPUs\n")
    print("samples/s per batch size ('-': not measured at that size); peak RSS: the largest over the measured sizes\n")
    print("| | setting | " + " | ".join(f"batch {b}" for b in batch_sizes)
          + " | peak RSS main (MB) | peak RSS per worker (MB) |")
    print("|---|---|" + "---:|" * (len(batch_sizes) + 2))
    rows: dict[str, tuple[str, dict[int, dict]]] = {}
    for (label, b), (g, r) in results.items():
        rows.setdefault(label, (g, {}))[1][b] = r
    for label, (g, by_bs) in rows.items():
        rates = " | ".join(f"{by_bs[b]['samples_per_s']:.1f}" if b in by_bs else "-" for b in batch_sizes)
        main_rss = max(r["rss_main_mb"] for r in by_bs.values())
        workers = [r["rss_worker_mb"] for r in by_bs.values() if r["rss_worker_mb"] is not None]
        print(f"| {g} | {label} | {rates} | {main_rss:.0f} | {max(workers):.0f} |" if workers else
              f"| {g} | {label} | {rates} | {main_rss:.0f} | - |")
    print(f"\nWhere the time goes, ms of CPU per sample, one thread, batch {ref} (this loader):\n")
    print("| pack | " + " | ".join(ours) + " | total |")
    print("|---|" + "---:|" * (len(ours) + 1))
    for name, stages in (("default", ours), ("--shuffle", ours_shuffled)):
        if stages:
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in stages.values()) + f" | {sum(stages.values()):.1f} |")
    print("\nBaseline (reference-like), ms of CPU per sample, one process:\n")
    print("| rasterio read | preprocessing + one-hot + float32 tensors | total |")
    print("|---:|---:|---:|")
    print(f"| {base['read']:.1f} | {base['preprocess']:.1f} | {base['read'] + base['preprocess']:.1f} |")

    def local(workers: int) -> Callable[[str, str], bool]:
        prefix = f"shards, local, {workers} workers"
        return lambda g, label: g == "b" and label.startswith(prefix) and "half" not in label

    print("\n| batch | best b / best a (per-file) | best with 2 workers / best with 0 workers |")
    print("|---:|---:|---:|")
    for b in batch_sizes:
        print(f"| {b} | {best_of(results, b, lambda g, _: g == 'b') / best_of(results, b, lambda g, _: g == 'a'):.2f} "
              f"| {best_of(results, b, local(2)) / best_of(results, b, local(0)):.2f} |")
    revs = dict.fromkeys(label.split(",")[0].removeprefix("loader at ") for (label, _), (g, _) in results.items()
                         if g == "today")
    for rev in revs:
        print(f"\nagainst the loader at {rev} (batch {ref}): best b / its best = "
              f"{best_of(results, ref, lambda g, _: g == 'b') / best_of(results, ref, lambda g, label: g == 'today' and label.startswith(f'loader at {rev},')):.2f}")
    if any(g == "b+" for g, _ in results.values()):
        cached = best_of(results, ref, lambda g, _: g == "b+")
        line = f"\nopt-in decoded cache (batch {ref}): best b+ / best b = {cached / best_of(results, ref, lambda g, _: g == 'b'):.2f}"
        for rev in revs:
            line += (f", / best of the loader at {rev} = "
                     f"{cached / best_of(results, ref, lambda g, label: g == 'today' and label.startswith(f'loader at {rev},')):.2f}")
        print(line)
    if any(g == "b~" for g, _ in results.values()):
        shuffled = best_of(results, ref, lambda g, _: g == "b~")
        line = (f"\nopt-in --shuffle pack (batch {ref}): best b~ / best b = "
                f"{shuffled / best_of(results, ref, lambda g, _: g == 'b'):.2f}")
        for rev in revs:
            line += (f", / best of the loader at {rev} = "
                     f"{shuffled / best_of(results, ref, lambda g, label: g == 'today' and label.startswith(f'loader at {rev},')):.2f}")
        print(line)
    if any(g == "h" for g, _ in results.values()):
        handed = best_of(results, ref, lambda g, _: g == "h")
        line = (f"\nto the hand-over, normalisation left to the device (batch {ref}): best h / best b = "
                f"{handed / best_of(results, ref, lambda g, _: g == 'b'):.2f}")
        for rev in revs:
            theirs = best_of(results, ref, lambda g, label: g == "h-today" and f"loader at {rev}," in label)
            line += f"; best h / loader at {rev} = {handed / theirs:.2f}"
            if any(g == "h~" for g, _ in results.values()):
                line += f", best h~ / it = {best_of(results, ref, lambda g, _: g == 'h~') / theirs:.2f}"
        print(line)
    rate = {label: r["samples_per_s"] for (label, b), (_, r) in results.items() if b == ref}
    for w, on_label in ((0, "shards, local, 0 workers, 2 decode threads"), (2, "shards, local, 2 workers, 1 thread each")):
        on, off = rate.get(on_label), rate.get(on_label + ", member checksums off")
        if on and off:
            print(f"member checksums ({w} workers, batch {ref}): {on:.1f} samples/s with, {off:.1f} without: "
                  f"cost {100 * (1 - on / off):+.1f} %")
    if config == "all":
        print(f"ratio vs class-index baseline (a', batch {ref}): "
              f"{best_of(results, ref, lambda g, _: g == 'b') / best_of(results, ref, lambda g, _: g == chr(97) + chr(39)):.1f}")
    print(f"ratio: {best_of(results, ref, lambda g, _: g == 'b') / best_of(results, ref, lambda g, _: g == 'a'):.1f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=48)
    ap.add_argument("--work", default="/tmp/bench_loader")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per run of a setting (best is kept)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all settings (best is kept)")
    ap.add_argument("--configs", default="all,aerial,s2", help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--batch-sizes", default="1,8,32", help="batch sizes of the core rows (comma-separated)")
    ap.add_argument("--today", default=TODAY_REV,
                    help="git revision(s), comma-separated, whose loaders are measured alongside ('' to skip)")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads of every setting's training process (the CPU normalisation "
                         "stands in for the GPU's; on a busy 2-core host 2 threads make each small op wait for "
                         "a descheduled thread)")
    # internal: one setting in a subprocess
    ap.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--shards", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--one-hot", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-member-checks", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--to-handover", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--decoded-cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sharing", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--s3-url", help=argparse.SUPPRESS)
    ap.add_argument("--s3-endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        return args
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        ap.error(f"--configs: unknown config(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONFIGS)}")
    given = args.batch_sizes
    try:
        args.batch_sizes = [int(b) for b in given.split(",") if b]
    except ValueError:
        args.batch_sizes = []
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        ap.error(f"--batch-sizes: expected positive integers separated by commas, got {given!r}")
    return args


def run_settings(settings: list[Setting], configs: list[str], tree: Path, shards: Path,
                 args: argparse.Namespace) -> dict[str, Results]:
    """Every setting, `--rounds` times, interleaved so that a change in machine load (this host is
    shared) hits baseline and loader alike; each setting keeps its best round."""
    from tqdm import tqdm

    results: dict[str, Results] = {c: {} for c in configs}
    with tqdm(total=args.rounds * len(settings), desc="bench_loader", unit="run") as bar:
        for _ in range(args.rounds):
            for group, label, bs, kw in settings:
                res = spawn(tree, shards, epochs=args.epochs, torch_threads=args.torch_threads, **kw)
                old = results[kw["config"]].get((label, bs))
                if old is None or res["samples_per_s"] > old[1]["samples_per_s"]:
                    results[kw["config"]][(label, bs)] = (group, res)
                bar.update(1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        if args.kind == "s3":
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        print(json.dumps(run_setting(args)))
        return 0
    configs, batch_sizes = args.configs, args.batch_sizes
    work = Path(args.work)
    tree, shards = prepare(work, args.patches)
    today = [t for rev in args.today.split(",") if rev for t in [prepare_today(work, tree, rev)] if t is not None]
    manifest = json.loads((shards / "manifest.json").read_text())
    n_samples = sum(v["samples"] for v in manifest["splits"].values())
    server, s3 = None, None
    if not args.skip_s3 and "all" in configs:
        server, url, endpoint = start_s3(shards)
        s3 = (url, endpoint)
    settings = [s for c in configs for s in settings_for(c, batch_sizes, today, s3)]
    try:
        results = run_settings(settings, configs, tree, shards, args)
    finally:
        if server is not None:
            server.stop()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs); "
          f"torch intra-op threads per training process: {args.torch_threads}")
    for config in configs:
        ours, base, mb = breakdown(tree, shards, config, reference_batch_size(batch_sizes))
        shuffled = breakdown(tree, shuffled_pack(shards), config, reference_batch_size(batch_sizes))[0] \
            if config in ("all", "s2") else None
        print_config(config, results[config], batch_sizes, n_samples, mb, ours, base, shuffled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
