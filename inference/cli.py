"""Console entry points: `flair-infer` (patch-level, from shards) and `flair-zonal` (large areas)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Sequence

from trainer.config import ConfigError


SUMMARY_LOGGER = "flair.summary"
"""Lines printed to stdout at the end of a run, also written to the run's log file (not to stderr twice)."""


def _setup_logging(log_file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    summary = logging.getLogger(SUMMARY_LOGGER)
    for h in list(summary.handlers):
        summary.removeHandler(h)
        h.close()
    summary.propagate = False
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        handlers.append(file_handler)
        summary.addHandler(file_handler)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def _summary(lines: Sequence[str]) -> None:
    """Print the run's summary to stdout and write it to the log file."""
    log = logging.getLogger(SUMMARY_LOGGER)
    for line in lines:
        print(line)
        log.info("%s", line)


# --------------------------------------------------------------------------------------------
# flair-zonal
# --------------------------------------------------------------------------------------------
def zonal_main(argv: Sequence[str] | None = None) -> int:
    from inference.zonal import ZonalError, run_zonal, summary_lines
    from inference.zonal_config import load_zonal_config
    from inference.zonal_reader import ZonalInputError

    parser = argparse.ArgumentParser(
        prog="flair-zonal",
        description="Large-area FLAIR-HUB detection: tiles with margins over one raster per modality, "
                    "mosaic of the tile cores to GeoTIFF/COG. Accepts the reference's config_zonal_detection.yaml.",
    )
    parser.add_argument("--config", required=True, help="zonal YAML config (see configs/zonal.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore tiles done by an earlier run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--override", nargs="+", default=[], action="extend", metavar="KEY",
                        help="zonal keys whose values may differ from the checkpoint's training config "
                             "(added to checkpoint_overrides), e.g. modalities.AERIAL_RGBI.channels")
    args = parser.parse_args(argv)
    try:
        cfg = load_zonal_config(args.config, overrides=args.override)
    except ConfigError as exc:
        print(f"flair-zonal: config error: {exc}", file=sys.stderr)
        return 2
    if args.no_resume:
        cfg["resume"] = False
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    _setup_logging(Path(cfg["output_path"]) / f"{cfg['output_name']}_{stamp}.log")
    try:
        report = run_zonal(cfg, progress=not args.no_progress)
    except (ZonalError, ZonalInputError, ConfigError, ValueError, FileNotFoundError) as exc:
        logging.getLogger("flair.zonal").error("%s", exc)
        return 1
    _summary(summary_lines(report))
    return 0


# --------------------------------------------------------------------------------------------
# flair-infer
# --------------------------------------------------------------------------------------------
def infer_main(argv: Sequence[str] | None = None) -> int:
    from inference.predict import InferOptions, run_infer

    parser = argparse.ArgumentParser(
        prog="flair-infer",
        description="Predict a split of packed shards: one georeferenced uint8 GeoTIFF per patch and task, "
                    "plus metrics (confusion matrix, IoU, mIoU, OA) when labels are present.",
    )
    parser.add_argument("--checkpoint", default=None,
                        help="any checkpoint flair-train writes (checkpoints/best_model.safetensors, best.ckpt, last.ckpt) "
                             "or a reference .ckpt/.pth/.safetensors (needs --config)")
    parser.add_argument("--data", required=True, help="shard root: a folder or an s3://, https://, hf:// URL")
    parser.add_argument("--split", default="test", help="split to predict (default: test)")
    parser.add_argument("--out", default=None, help="output folder (with --metrics-only: default --pred)")
    parser.add_argument("--metrics-only", action="store_true",
                        help="no model: score the prediction files of an earlier run (--pred) against the split's labels, "
                             "writing the same metrics files (the reference's tasks.metrics_only)")
    parser.add_argument("--pred", default=None, help="with --metrics-only: the --out folder of the predicting run")
    parser.add_argument("--config", nargs="*", default=None,
                        help="training config (dir or YAML files): required for reference checkpoints, "
                             "and overrides the preprocessing of ours")
    parser.add_argument("--output", choices=("argmax", "class_prob"), default="argmax")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu / cuda / cuda:1 (default: Accelerate's choice)")
    parser.add_argument("--compression", choices=("lzw", "zstd", "deflate"), default="lzw")
    parser.add_argument("--no-write", action="store_true", help="metrics only, no GeoTIFFs")
    parser.add_argument("--limit", type=int, default=None, help="predict at most this many patches")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.pred and not args.metrics_only:
        parser.error("--pred goes with --metrics-only")
    if not args.metrics_only and not args.checkpoint and not args.config:
        parser.error("--checkpoint is required (or --metrics-only --pred DIR to score existing predictions)")
    if not args.metrics_only and not args.out and not args.config:
        parser.error("--out is required")
    _setup_logging()
    opts = InferOptions(
        checkpoint=args.checkpoint, data=args.data, split=args.split, out=args.out, config=args.config,
        output=args.output, batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        compression=args.compression, write=not args.no_write, limit=args.limit, progress=not args.no_progress,
        metrics_only=args.metrics_only, pred=args.pred,
    )
    try:
        run_infer(opts)
    except (ConfigError, ValueError, FileNotFoundError, KeyError) as exc:
        logging.getLogger("flair.infer").error("%s", exc)
        return 1
    return 0
