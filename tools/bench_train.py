"""Training throughput: does the streaming loader keep the model busy?

    python -m tools.bench_train --work /tmp/bench_train                  # CPU: the demo config
    python -m tools.bench_train --work /tmp/bench_train --gpu            # + Swin-B/UPerNet LC-A, LC-ALL, bf16

For each setting, in a fresh subprocess:
- **loader-fed**: `trainer.train.run` on packed toy shards (the real loop: loader -> model ->
  loss -> backward -> optimizer, with the loop's own timing), `--steps` timed optimizer steps
  after `--warmup` untimed ones; reports steps/s, samples/s and the data-wait share (time the
  loop waited for the next batch / wall time);
- **baseline, same run**: the same model, loss, optimizer and precision stepping on one batch
  already on the device (no loader at all): the step rate the hardware allows.
`loader/baseline` = loader-fed steps/s over baseline steps/s (1.00 = the loader never holds the
model back). Target on GPU: data wait < 5 % of step time with the config's default workers.

Settings: `demo` (configs/demo: ResNet-18/U-Net aerial + U-TAE S2, batch 2, CPU, fp32); with
`--gpu`: `LC-A` and `LC-ALL` (configs/seed, Swin-B/UPerNet, batch 5, bf16, the config's
`hardware.num_workers`, plus `--gpu-workers` loader processes), each also fed by the
reference's way of reading (`--per-file`: one rasterio open per modality per sample,
`tools.bench_loader.TreeDataset`, the same loader processes). On a GPU the peak memory the
step allocated is reported. `--json` keeps every figure (`flair-simulate --step-time-from` reads
the no-loader step time from it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def prepare(work: Path, patches: int) -> tuple[Path, Path]:
    """A toy tree and its shards under `work` (kept between runs); the loader benchmark's data."""
    from tools.bench_loader import prepare as prepare_tree_and_shards

    return prepare_tree_and_shards(work, patches)


def setting_layers(name: str) -> list[Path]:
    return [REPO / "configs" / "demo"] if name == "demo" else [REPO / "configs" / "seed" / f"{name}.yaml"]


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One setting: loader-fed training, then the no-loader baseline (runs in a subprocess)."""
    import torch

    from trainer import load_train_config
    from trainer import run_training as run

    gpu = args.setting != "demo"
    steps = args.warmup + args.steps
    overrides = [
        f"data.source={args.shards}", "data.train_split=train", f"paths.out_folder={args.work / 'runs'}",
        f"paths.out_model_name={args.setting}-w{args.workers}", f"train.stop_after_steps={steps}",
        "train.tensorboard=false", "train.report=false", "saving.enable_progress_bar=false",
        "saving.ckpt_save_also_last=false", "hyperparams.num_epochs=1000",
        "models.monotemp_model.encoder_weights=null",  # throughput does not depend on the initial weights
    ]
    if gpu:
        overrides += ["hardware.accelerator=gpu", "train.mixed_precision=bf16", f"hyperparams.batch_size={args.batch_size}"]
    if args.workers >= 0:
        overrides.append(f"hardware.num_workers={args.workers}")
    cfg = load_train_config(setting_layers(args.setting), overrides)
    # Evaluation is not what is measured: validate on a tiny split, rarely.
    cfg["train"]["limit_val_batches"] = 1
    out_dir = Path(cfg["paths"]["out_folder"]) / cfg["paths"]["out_model_name"]
    (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    cuda = torch.cuda.is_available() and gpu
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - t0
    gpu_memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["kind"] == "step" and r["step"] > args.warmup]
    if not timed:
        raise SystemExit("no timed step: raise --patches or lower --warmup")
    # Per-step rates come from the loop's own clock; their harmonic means give the window's rates.
    step_s = [cfg["hyperparams"]["batch_size"] / r["samples_per_s"] for r in timed]
    waits = [r["data_wait_share"] * s for r, s in zip(timed, step_s)]
    total = sum(step_s)
    loader = {"steps_per_s": len(timed) / total, "samples_per_s": len(timed) * cfg["hyperparams"]["batch_size"] / total,
              "data_wait_share": sum(waits) / total, "wall_s": wall, "gpu_memory_gb": gpu_memory}
    base = baseline(cfg, args.steps, args.warmup)
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    result = {"setting": args.setting, "device": device, "batch": cfg["hyperparams"]["batch_size"],
              "precision": cfg["train"]["mixed_precision"], "workers": cfg["hardware"]["num_workers"],
              "loader": loader, "baseline": base}
    if args.per_file:
        # The same step fed by the reference's way of reading: one GeoTIFF per modality per sample.
        batches = per_file_batches(cfg, args.tree, cfg["hardware"]["num_workers"])
        result["per_file"] = train_steps(cfg, batches, args.steps, args.warmup)
    return result


def baseline(cfg: dict[str, Any], steps: int, warmup: int) -> dict[str, float]:
    """Steps/s of the same training step on one batch that is already on the device."""
    return train_steps(cfg, None, steps, warmup)


def train_steps(cfg: dict[str, Any], batches: Any, steps: int, warmup: int) -> dict[str, float]:
    """The training step (forward, loss, backward, optimizer) timed over `steps` after `warmup`.

    `batches`: None for the no-loader baseline (one batch from the streaming loader, on the device,
    used over and over), or an iterator of model-ready batches on the CPU (the per-file loader),
    whose waits are timed as the training loop times them.
    """
    import torch
    from accelerate import Accelerator

    from trainer import CompositeLoss, build_optimizer
    from trainer import model_forward as forward
    from trainer.data import StreamingLoader
    from trainer.model import build_model

    acc = Accelerator(cpu=cfg["hardware"]["accelerator"] == "cpu" or not torch.cuda.is_available(),
                      mixed_precision=cfg["train"]["mixed_precision"])
    loader = StreamingLoader.from_config(cfg, cfg["data"]["train_split"], rank=0, world_size=1, num_workers=0)
    fixed = loader.to_model_inputs(next(iter(loader)), acc.device) if batches is None else None
    model = build_model(cfg)
    loss_fn = CompositeLoss(cfg).to(acc.device)
    optimizer = build_optimizer(cfg, model.parameters())
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    series = loader.spec.series
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wait = 0.0

    def step() -> None:
        nonlocal wait
        if fixed is None:
            t = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t
            inputs = {k: v.to(acc.device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}
        else:
            inputs = fixed
        with acc.autocast():
            out = forward(model, inputs, series)
            loss = loss_fn(out.tasks, out.aux, inputs, check_finite=False).total
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the loop reads the loss every step too (a device sync)

    for _ in range(warmup):
        step()
    wait = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    out = {"steps_per_s": steps / dt, "samples_per_s": steps * cfg["hyperparams"]["batch_size"] / dt,
           "data_wait_share": wait / dt}
    if acc.device.type == "cuda":
        out["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def per_file_batches(cfg: dict[str, Any], tree: Path, workers: int) -> Any:
    """Model-ready batches read the reference's way: one rasterio open per modality per sample
    (`tools.bench_loader.TreeDataset`, class-index labels), padded series with their masks."""
    import torch
    from torch.utils.data import DataLoader

    from tools.bench_loader import TreeDataset, pad_collate
    from trainer.data import Catalog, SampleSpec, dates_key, open_source, pad_mask_key

    spec = SampleSpec.from_config(cfg, augment=False)
    ids = Catalog(open_source(str(cfg["data"]["source"]))).select(cfg["data"]["train_split"], spec.needed_modalities).patch_ids
    ds = TreeDataset(tree, ids, cfg, one_hot=False)

    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = {m: [s[m].shape[0] for s in samples] for m in spec.series}
        batch = pad_collate(samples)
        for m, ts in lengths.items():
            t_max = batch[m].shape[1]
            batch[pad_mask_key(m)] = torch.arange(t_max)[None, :] >= torch.tensor(ts)[:, None]
            batch[dates_key(m)] = batch[dates_key(m)].float()
        batch["valid"] = torch.ones(len(samples), dtype=torch.bool)
        return batch

    kw = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    dl = DataLoader(ds, batch_size=cfg["hyperparams"]["batch_size"], shuffle=True, num_workers=workers,
                    collate_fn=collate, drop_last=True, pin_memory=torch.cuda.is_available(), **kw)
    while True:
        yield from dl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_train"))
    p.add_argument("--patches", type=int, default=48, help="toy patches to generate (about 60%% are train)")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (start-up, allocator, cudnn)")
    p.add_argument("--gpu", action="store_true", help="also run LC-A and LC-ALL (Swin-B/UPerNet, bf16) on the GPU")
    p.add_argument("--batch-size", type=int, default=5, help="GPU settings' batch size (the reference's 5)")
    p.add_argument("--gpu-workers", type=int, nargs="*", default=[4], help="extra loader-process counts for GPU settings")
    p.add_argument("--per-file", action="store_true",
                   help="also feed the step from the GeoTIFF tree read per file, as the reference does (on with --gpu)")
    p.add_argument("--json", type=Path, help="also write the results as JSON (flair-simulate --step-time-from reads it)")
    p.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", default="demo", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.run_one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    tree, shards = prepare(args.work, args.patches)
    per_file = args.per_file or args.gpu
    plan: list[tuple[str, int]] = [("demo", -1)]
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; GPU settings not measured", file=sys.stderr)
        else:
            for name in ("LC-A", "LC-ALL"):
                plan += [(name, -1)] + [(name, w) for w in args.gpu_workers]
    results = []
    for name, workers in plan:
        cmd = [sys.executable, "-m", "tools.bench_train", "--run-one", "--setting", name, "--workers", str(workers),
               "--shards", str(shards), "--tree", str(tree), "--work", str(args.work), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)] + (["--per-file"] if per_file else [])
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name} (workers {workers}) failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[len("RESULT "):]))

    print("| setting | device | batch | precision | loader workers | fed by | steps/s | samples/s | data wait "
          "| GPU memory | steps/s (no loader) | loader/baseline |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ba = r["baseline"]
        for kind, lo in (("shards (streaming loader)", r["loader"]), ("GeoTIFFs per file", r.get("per_file"))):
            if lo is None:
                continue
            mem = f"{lo['gpu_memory_gb']:.1f} GB" if lo.get("gpu_memory_gb") is not None else "-"
            print(f"| {r['setting']} | {r['device']} | {r['batch']} | {r['precision']} | {r['workers']} | {kind} | "
                  f"{lo['steps_per_s']:.3f} | {lo['samples_per_s']:.2f} | {100 * lo['data_wait_share']:.1f} % | {mem} | "
                  f"{ba['steps_per_s']:.3f} | {lo['steps_per_s'] / ba['steps_per_s']:.2f} |")
    if results:
        worst = min(r["loader"]["steps_per_s"] / r["baseline"]["steps_per_s"] for r in results)
        print(f"ratio: {worst:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
