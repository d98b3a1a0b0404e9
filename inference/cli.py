"""Console entry points: `flair-infer` (patch-level, from shards) and `flair-zonal` (large areas)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Sequence

from packer.cli_help import HelpFormatter, examples
from packer.command import run_command
from packer.errors import PackError
from trainer import ConfigError


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes, not the stream of the first call."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


SUMMARY_LOGGER = "flair.summary"
"""Lines printed to stdout at the end of a run, also written to the run's log file (not to stderr twice)."""


def _setup_logging(log_file: Path | None = None) -> None:
    """Timestamped progress of our own loggers (`flair.*`) on stderr and in `log_file`; other
    libraries' INFO chatter (botocore's "Found credentials" ...) stays out. The run's summary
    (`SUMMARY_LOGGER`) goes to the log file only: it is printed to stdout by `_summary`."""
    handlers: list[logging.Handler] = [_Stderr()]
    summary = logging.getLogger(SUMMARY_LOGGER)
    for old in list(summary.handlers):
        summary.removeHandler(old)
        old.close()
    summary.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        handlers.append(file_handler)
        summary.addHandler(file_handler)
    ours = logging.getLogger("flair")
    for old in list(ours.handlers):
        ours.removeHandler(old)
        if old not in summary.handlers:
            old.close()
    for h in handlers:
        h.setFormatter(fmt)
        ours.addHandler(h)
    ours.setLevel(logging.INFO)
    ours.propagate = False


def _summary(lines: Sequence[str]) -> None:
    """Print the run's summary to stdout and write it to the log file."""
    log = logging.getLogger(SUMMARY_LOGGER)
    for line in lines:
        print(line)
        log.info("%s", line)


# --------------------------------------------------------------------------------------------
# flair-zonal
# --------------------------------------------------------------------------------------------
def zonal_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flair-zonal", formatter_class=HelpFormatter,
        description="Large-area FLAIR-HUB detection: tiles with margins over one raster per modality, "
                    "mosaic of the tile cores to GeoTIFF/COG (docs/inference.md). Accepts the reference's "
                    "config_zonal_detection.yaml.",
        epilog=examples(
            "flair-zonal --config my_zonal.yaml",
            "flair-zonal --config my_zonal.yaml --no-resume --no-progress",
            "flair-zonal --config zonal      # the shipped template; its relative paths then start from here",
        ))
    parser.add_argument("--config", required=True,
                        help="zonal YAML config (relative paths start from its folder), or the built-in "
                             "template name `zonal` (configs/zonal.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore tiles done by an earlier run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--override", nargs="+", default=[], action="extend", metavar="KEY",
                        help="zonal keys whose values may differ from the checkpoint's training config "
                             "(added to checkpoint_overrides), e.g. modalities.AERIAL_RGBI.channels (default: none)")
    return parser


def zonal_main(argv: Sequence[str] | None = None) -> int:
    from inference.zonal import ZonalError, run_zonal, summary_lines
    from inference.zonal_config import load_zonal_config
    from inference.zonal_reader import ZonalInputError
    from trainer import builtin_config_paths

    args = zonal_parser().parse_args(argv)

    def body() -> int:
        shipped = builtin_config_paths().get(args.config) if not Path(args.config).exists() else None
        # The shipped template lives inside the installation: its relative paths start from here instead.
        cfg = (load_zonal_config(shipped, base_dir=Path.cwd(), overrides=args.override) if shipped is not None
               else load_zonal_config(args.config, overrides=args.override))
        if args.no_resume:
            cfg["resume"] = False
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        _setup_logging(Path(cfg["output_path"]) / f"{cfg['output_name']}_{stamp}.log")
        report = run_zonal(cfg, progress=not args.no_progress)
        _summary(summary_lines(report))
        return 0

    # A tile that failed is listed by run_zonal; a stop keeps every tile written (see inference/zonal.py).
    return run_command("flair-zonal", body, expected=(ZonalError, ZonalInputError, ConfigError, ValueError, PackError),
                       interrupted="tiles written so far are kept: rerun the same command to resume")


# --------------------------------------------------------------------------------------------
# flair-infer
# --------------------------------------------------------------------------------------------
def infer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flair-infer", formatter_class=HelpFormatter,
        description="Predict a split of packed shards: one georeferenced uint8 GeoTIFF per patch and task, "
                    "plus metrics (confusion matrix, IoU, mIoU, OA) when labels are present (docs/inference.md).",
        epilog=examples(
            "flair-infer --checkpoint runs/LC-A/checkpoints/best_model.safetensors --data shards/ --out preds/",
            "flair-infer --checkpoint FLAIR-HUB_LC-A.safetensors --config LC-A --data s3://bucket/flair-hub --out preds/",
            "flair-infer --metrics-only --pred preds/ --data shards/ --split test   # re-score existing predictions",
        ))
    parser.add_argument("--checkpoint", default=None,
                        help="any checkpoint flair-train writes (checkpoints/best_model.safetensors, best.ckpt, "
                             "last.ckpt) or a reference .ckpt/.pth/.safetensors (needs --config); required unless "
                             "--metrics-only (default: none)")
    parser.add_argument("--data", required=True, help="shard root: a folder or an s3://, https://, hf:// URL")
    parser.add_argument("--split", default="test", help="split to predict")
    parser.add_argument("--out", default=None, help="output folder (required unless --metrics-only, where it "
                                                    "defaults to --pred)")
    parser.add_argument("--metrics-only", action="store_true",
                        help="no model: score the prediction files of an earlier run (--pred) against the split's "
                             "labels, writing the same metrics files (the reference's tasks.metrics_only)")
    parser.add_argument("--pred", default=None, help="with --metrics-only: the --out folder of the predicting run (default: none)")
    parser.add_argument("--config", nargs="*", default=None, metavar="DIR_OR_YAML",
                        help="training config (dirs, YAML files or built-in names such as LC-A): required for "
                             "reference checkpoints, and overrides the preprocessing of ours (default: the config "
                             "stored in our checkpoint)")
    parser.add_argument("--output", choices=("argmax", "class_prob"), default="argmax",
                        help="argmax: one uint8 class band; class_prob: one uint8 probability band per class")
    parser.add_argument("--batch-size", type=int, default=4, help="patches per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="loader worker processes (0: read in this process)")
    parser.add_argument("--device", default=None, help="cpu / cuda / cuda:1 (default: Accelerate's choice)")
    parser.add_argument("--compression", choices=("lzw", "zstd", "deflate"), default="lzw",
                        help="GeoTIFF compression of the predictions")
    parser.add_argument("--no-write", action="store_true", help="metrics only, no GeoTIFFs")
    parser.add_argument("--limit", type=int, default=None, help="predict at most this many patches (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def infer_main(argv: Sequence[str] | None = None) -> int:
    from inference.predict import InferOptions, run_infer

    parser = infer_parser()
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

    def body() -> int:
        from trainer.data import SourceURLError, check_source_url

        try:
            check_source_url(args.data)  # before loading a model: a typo in the URL fails at once
        except SourceURLError as exc:
            raise ConfigError(f"--data: {exc}") from None
        run_infer(opts)
        return 0

    return run_command("flair-infer", body, expected=_infer_errors())


def _infer_errors() -> tuple[type[BaseException], ...]:
    """What bad input to flair-infer raises: a config, a checkpoint, a selection, a shard."""
    from trainer import CheckpointError  # imported here, not above: `--help` needs no torch
    from trainer.data import ShardIntegrityError
    from trainer.model import CheckpointMismatch

    return (ConfigError, CheckpointError, CheckpointMismatch, ShardIntegrityError, PackError, ValueError, KeyError)
