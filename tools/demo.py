"""`make demo`: the whole pipeline end to end on a generated toy FLAIR-HUB tree, on CPU.

generate (flair-toy, in the Hugging Face Hub's zip layout) -> pack straight from the zips (flair-pack)
-> verify -> train (flair-train, configs/demo) -> patch inference with metrics (flair-infer) ->
zonal detection over one ROI to a COG (flair-zonal).

Each stage runs the real console command in a subprocess, so the demo exercises exactly what a
user types. Stages whose outputs are already complete are skipped on a re-run (the packer and the
zonal run resume by themselves); `make clean-demo` starts over.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tools import toy_zonal

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(title: str, cmd: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"demo: stage '{title}' failed with exit code {proc.returncode}")
    print(f"--- {title}: {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="demo folder (default demo_out/)")
    p.add_argument("--patches", type=int, default=24, help="toy patches to generate (default 24)")
    args = p.parse_args(argv)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    hub, shards, run = out / "toy_hub", out / "shards", out / "train"
    area, preds, zonal = out / "zonal_area", out / "predict", out / "zonal"
    started = time.perf_counter()

    if not (hub / "data" / "GLOBAL_ALL_MTD.zip").is_file() or not (area / "area.json").is_file():
        shutil.rmtree(hub, ignore_errors=True)
        shutil.rmtree(area, ignore_errors=True)
        # --zonal mosaics one ROI (the zonal stage's test area) before the tree is zipped away.
        _run("generate a toy FLAIR-HUB in the Hub's zip layout (data/*.zip)", [
            str(BIN / "flair-toy"), "--out", str(hub), "--zips", "--patches", str(args.patches), "--domains", "3",
            "--rois-per-domain", "2", "--t-s2", "6", "12", "--t-s1", "6", "12", "--seed", "0",
            "--zonal", str(area)])
    _run("pack straight from the zips into WebDataset shards", [
        str(BIN / "flair-pack"), "--src", str(hub), "--out", str(shards), "--shard-size", "32MB"])
    _run("verify the shards", [str(BIN / "flair-pack"), "verify", str(shards)])
    _run("inspect the dataset", [str(BIN / "flair-pack"), "inspect", str(shards)])

    best = run / "checkpoints" / "best_model.safetensors"
    if not best.exists():
        _run("train (configs/demo: ResNet-18/U-Net on aerial + U-TAE on Sentinel-2, CPU)", [
            str(BIN / "flair-train"), "--config", "configs/demo",
            "--set", f"data.source={shards}", f"paths.out_folder={out}", "paths.out_model_name=train"])
    _run("predict the test split with metrics", [
        str(BIN / "flair-infer"), "--checkpoint", str(best), "--data", str(shards), "--split", "test",
        "--out", str(preds)])  # the checkpoint carries its training config

    # The zonal area: the largest ROI of the toy tree, mosaicked by flair-toy --zonal above.
    area_info = toy_zonal.load_zonal_area(area)
    zonal_cfg = toy_zonal.zonal_config(
        area_info, best, inputs=("AERIAL_RGBI", "SENTINEL2_TS"), output_path=str(zonal),
        output_name="demo", cog_conversion=True)
    cfg_path = out / "zonal_demo.yaml"
    cfg_path.write_text(yaml.safe_dump(zonal_cfg, sort_keys=False))
    _run("zonal detection over one ROI to a Cloud-Optimized GeoTIFF", [
        str(BIN / "flair-zonal"), "--config", str(cfg_path)])

    print(f"\ndemo: done in {time.perf_counter() - started:.0f} s; outputs in {out}/ "
          f"(shards/, train/ with checkpoints, TensorBoard logs and report, predict/, zonal/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
