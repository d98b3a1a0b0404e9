"""Inference benchmark: `flair-infer` patches/s and `flair-zonal` km²/h, with where the time goes.

    python -m tools.bench_infer --work /tmp/bench_infer [--arch resnet18-unet] [--device cpu]
    python -m tools.bench_infer --work /tmp/bench_infer --gpu      # + Swin-B LC-A on CUDA, when present

1. Data: a toy tree (`tools.flair_toy`) packed into shards (`packer.pack`) for `flair-infer`, and
   one square toy ROI of `--zonal-patches` patches mosaicked by `tools.toy_zonal` for `flair-zonal`.
2. Model: `--checkpoint` (e.g. the demo's `best_model.safetensors`), else the LC-A configuration
   (`configs/seed/LC-A.yaml`, aerial -> CoSIA) with the encoder swapped for `--arch` and random
   weights, saved as one of our checkpoints so the loading path is the real one. Weights do not
   change the speed.
3. Measured in this run, on the same data and model:
   - `flair-infer` on the test split (streaming loader, batched) vs a per-file baseline shaped
     like the reference's predict step (rasterio read + float64 normalisation per patch, batch 1,
     GeoTIFF written with the label's profile);
   - `flair-zonal` on the area with the model vs with a copy-the-input stand-in (the pipeline's
     own ceiling: reading, cropping, mosaicking, writing);
   - with `--gpu` and CUDA: the same two with Swin-B UPerNet (LC-A's real encoder) on the GPU;
     without CUDA the GPU rows say "not measured".
Prints a markdown table; shares are read / model / write as fractions of the run's wall time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
COSIA = "AERIAL_LABEL-COSIA"


def prepare(work: Path, patches: int, zonal_patches: int) -> tuple[Path, Path, Any]:
    from packer.pack import pack_dataset
    from tools.flair_toy import ToyConfig, generate
    from tools.toy_zonal import build_zonal_area

    tree, shards, ztree = work / "tree", work / "shards", work / "zonal_tree"
    if not (tree / "GLOBAL_ALL_MTD").is_dir():
        generate(tree, ToyConfig(patches=patches, domains=2, rois_per_domain=2, seed=0, t_s2=(8, 16), t_s1=(8, 16),
                                 overwrite=True))
    if not (shards / "manifest.json").is_file():
        pack_dataset(tree, shards, progress=False)
    if not (ztree / "GLOBAL_ALL_MTD").is_dir():
        generate(ztree, ToyConfig(patches=zonal_patches, domains=1, rois_per_domain=1, seed=1, t_s2=(8, 16),
                                  t_s1=(8, 16), overwrite=True))
    area = build_zonal_area(ztree, work / "area")
    return tree, shards, area


def model_config(arch: str) -> dict[str, Any]:
    from trainer import read_config_layers

    raw = read_config_layers([REPO / "configs" / "seed" / "LC-A.yaml"])
    raw["models"]["monotemp_model"] = {"arch": arch, "new_channels_init_mode": "random"}
    return raw


def make_checkpoint(work: Path, arch: str) -> Path:
    from trainer.model import build_model, save_model

    path = work / "model" / f"bench_{arch}"
    if not path.with_suffix(".safetensors").is_file():
        torch.manual_seed(0)
        save_model(build_model(model_config(arch)), path)
    return path.with_suffix(".safetensors")


# --------------------------------------------------------------------------------------------
# flair-infer and its per-file baseline
# --------------------------------------------------------------------------------------------
def bench_infer(shards: Path, ckpt: Path, out: Path, device: str, batch_size: int, workers: int) -> dict[str, Any]:
    from inference.predict import InferOptions, run_infer

    run_infer(InferOptions(checkpoint=str(ckpt), data=str(shards), out=str(out / "warmup"), device=device,
                           batch_size=batch_size, limit=batch_size, progress=False, print_table=False))
    res = run_infer(InferOptions(checkpoint=str(ckpt), data=str(shards), out=str(out), device=device,
                                 batch_size=batch_size, num_workers=workers, progress=False, print_table=False))
    # The loop alone, like the baseline (model loading and set-up are not counted in either).
    return {"n": res.n_patches, "s": res.loop_s, "setup": res.total_s - res.loop_s, "read": res.read_s,
            "model": res.model_s, "write": res.write_s, "params": res.params}


def bench_per_file_baseline(tree: Path, ckpt: Path, out: Path, device: str) -> dict[str, Any]:
    """One patch at a time, as the reference's predict step: open, read, normalise, predict, write."""
    import rasterio

    from inference.model_io import load_inference_model
    from packer.schema import PatchId
    from trainer import ConfusionMatrix, read_config_layers
    from trainer.data import normalize_custom, select_channels

    cfg = read_config_layers([REPO / "configs" / "seed" / "LC-A.yaml"])  # its preprocessing keys
    chans = cfg["modalities"]["inputs_channels"]["AERIAL_RGBI"]
    norm = cfg["modalities"]["normalization"]
    model, _ = load_inference_model(ckpt, device=device)
    import csv

    with open(tree / "FLAIR-HUB_TOY-DATASET_TEST.csv", newline="") as fh:
        patch_ids = [row["patch_id"] for row in csv.DictReader(fh)]
    out.mkdir(parents=True, exist_ok=True)
    cm = ConfusionMatrix(19)
    t = {"read": 0.0, "model": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    for pid in patch_ids:
        p = PatchId.parse(pid)
        a = time.perf_counter()
        with rasterio.open(tree / p.relative_path("AERIAL_RGBI")) as src:
            img = select_channels(src.read(), chans)
        x = normalize_custom(img, norm["AERIAL_RGBI_means"], norm["AERIAL_RGBI_stds"])
        with rasterio.open(tree / p.relative_path(COSIA)) as src:
            label, meta = src.read(1), src.profile
        b = time.perf_counter()
        with torch.no_grad():
            logits = model({"AERIAL_RGBI": torch.from_numpy(x).float()[None].to(device)}, {}, {}, out_size=512).tasks[COSIA]
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        cm.update(pred, label)
        c = time.perf_counter()
        meta.update(count=1, compress="lzw")
        with rasterio.open(out / f"PRED_{p.file_name(COSIA)}", "w", **meta) as dst:
            dst.write(pred, 1)
        d = time.perf_counter()
        t["read"] += b - a
        t["model"] += c - b
        t["write"] += d - c
    return {"n": len(patch_ids), "s": time.perf_counter() - t0, **t}


# --------------------------------------------------------------------------------------------
# flair-zonal
# --------------------------------------------------------------------------------------------
def bench_zonal(area: Any, ckpt: Path, out: Path, device: str, tile: int, margin: int, batch_size: int,
                workers: int, standin: bool) -> dict[str, Any]:
    from inference.standin import CopyBandModel
    from inference.zonal import run_zonal
    from inference.zonal_config import validate_zonal_config
    from tools.toy_zonal import zonal_config

    raw = zonal_config(area, ckpt, inputs=("AERIAL_RGBI",), img_pixels_detection=tile, margin=margin,
                       batch_size=batch_size, num_worker=workers, output_path=str(out), use_gpu=device.startswith("cuda"),
                       cog_conversion=True, resume=False)
    cfg = validate_zonal_config(raw)
    model = CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19}) if standin else None
    rep = run_zonal(cfg, model=model, progress=False)
    return {"km2": rep.area_km2, "s": rep.total_s, "read": rep.read_s, "model": rep.model_s, "write": rep.write_s,
            "tiles": rep.tiles_total}


def _row(name: str, r: dict[str, Any], unit: str) -> str:
    if unit == "patches/s":
        rate = r["n"] / r["s"]
        size = f"{r['n']} patches"
    else:
        rate = r["km2"] / r["s"] * 3600
        size = f"{r['km2']:.3f} km² / {r['tiles']} tiles"
    shares = " / ".join(f"{100 * r[k] / r['s']:.0f}%" for k in ("read", "model", "write"))
    return f"| {name} | {size} | {r['s']:.1f} | {rate:.3g} {unit} | {shares} |", rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_infer", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/bench_infer")
    parser.add_argument("--patches", type=int, default=24, help="toy patches for flair-infer (about half are test)")
    parser.add_argument("--zonal-patches", type=int, default=16, help="patches of the zonal ROI (16 = 4 x 4 = 0.17 km²)")
    parser.add_argument("--arch", default="resnet18-unet", help="encoder-decoder of the CPU model")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint of ours instead (e.g. the demo's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--tile", type=int, default=1024, help="zonal img_pixels_detection")
    parser.add_argument("--margin", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--gpu", action="store_true", help="also time Swin-B LC-A on CUDA when available")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tree, shards, area = prepare(work, args.patches, args.zonal_patches)
    ckpt = Path(args.checkpoint) if args.checkpoint else make_checkpoint(work, args.arch)
    from inference.model_io import load_inference_model

    params = sum(p.numel() for p in load_inference_model(ckpt)[0].parameters())
    print(f"model: {ckpt.name} ({params / 1e6:.1f} M parameters), device {args.device}, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| run | size | wall s | throughput | read / model / write |")
    print("|---|---|---:|---:|---|")
    ours = bench_infer(shards, ckpt, work / "out_infer", args.device, args.batch_size, args.workers)
    line, ours_rate = _row(f"flair-infer (shards, batch {args.batch_size})", ours, "patches/s")
    print(line)
    base = bench_per_file_baseline(tree, ckpt, work / "out_baseline", args.device)
    line, base_rate = _row("baseline: per-file, batch 1 (reference-like)", base, "patches/s")
    print(line)
    zon = bench_zonal(area, ckpt, work / "out_zonal", args.device, args.tile, args.margin, 1, args.workers, False)
    line, zon_rate = _row(f"flair-zonal, tiles {args.tile}/{args.margin}, model", zon, "km²/h")
    print(line)
    ceil = bench_zonal(area, ckpt, work / "out_zonal_io", args.device, args.tile, args.margin, 1, args.workers, True)
    line, ceil_rate = _row("flair-zonal, copy stand-in (pipeline only)", ceil, "km²/h")
    print(line)
    if args.gpu and torch.cuda.is_available():
        gpu_ckpt = make_checkpoint(work, "swin_base_patch4_window12_384-upernet")
        g = bench_infer(shards, gpu_ckpt, work / "out_infer_gpu", "cuda", 8, 4)
        print(_row("GPU flair-infer, Swin-B LC-A, batch 8", g, "patches/s")[0])
        gz = bench_zonal(area, gpu_ckpt, work / "out_zonal_gpu", "cuda", 2048, 512, 1, 4, False)
        print(_row("GPU flair-zonal, Swin-B LC-A, tiles 2048/512", gz, "km²/h")[0])
    else:
        why = "no CUDA device" if args.gpu else "run with --gpu on a CUDA machine"
        print(f"| GPU flair-infer / flair-zonal, Swin-B LC-A | — | — | not measured ({why}) | — |")
    print()
    print(f"ratio flair-infer / per-file baseline: {ours_rate / base_rate:.2f}x")
    print(f"ratio zonal with model / pipeline-only ceiling: {zon_rate / ceil_rate:.3f} (model share of zonal time "
          f"{100 * zon['model'] / zon['s']:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
