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
from trainer.config import ConfigError


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes, not the stream of the first call."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(log_file: Path | None = None) -> None:
    """Timestamped progress of our own loggers (`flair.*`) on stderr and in `log_file`; other
    libraries' INFO chatter (botocore's "Found credentials" ...) stays out."""
    handlers: list[logging.Handler] = [_Stderr()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    ours = logging.getLogger("flair")
    for old in list(ours.handlers):
        ours.removeHandler(old)
        old.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        ours.addHandler(h)
    ours.setLevel(logging.INFO)
    ours.propagate = False


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
    return parser


def zonal_main(argv: Sequence[str] | None = None) -> int:
    from inference.zonal import ZonalError, run_zonal
    from inference.zonal_config import load_zonal_config
    from inference.zonal_reader import ZonalInputError
    from trainer.builtin_configs import builtin_configs

    args = zonal_parser().parse_args(argv)

    def body() -> int:
        shipped = builtin_configs().get(args.config) if not Path(args.config).exists() else None
        # The shipped template lives inside the installation: its relative paths start from here instead.
        cfg = (load_zonal_config(shipped, base_dir=Path.cwd()) if shipped is not None
               else load_zonal_config(args.config))
        if args.no_resume:
            cfg["resume"] = False
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        _setup_logging(Path(cfg["output_path"]) / f"{cfg['output_name']}_{stamp}.log")
        report = run_zonal(cfg, progress=not args.no_progress)
        _print_zonal_report(report)
        return 0

    # A tile that failed is listed by run_zonal; a stop keeps every tile written (see inference/zonal.py).
    return run_command("flair-zonal", body, expected=(ZonalError, ZonalInputError, ConfigError, ValueError, PackError),
                       interrupted="tiles written so far are kept: rerun the same command to resume")


def _print_zonal_report(report) -> None:
    t = max(report.total_s, 1e-9)
    print(f"tiles: {report.tiles_total} ({report.tiles_skipped} reused from an earlier run), device {report.device}")
    print(f"area: {report.area_km2:.4f} km2 in {t:.1f} s = {report.area_km2 / t * 3600:.3f} km2/h "
          f"(read {report.read_s:.1f} s, model {report.model_s:.1f} s, write {report.write_s:.1f} s)")
    for p in report.outputs:
        print(f"wrote {p}")


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
            "flair-infer --checkpoint best_model.safetensors --data shards/ --split valid --out m/ --no-write",
        ))
    parser.add_argument("--checkpoint", required=True,
                        help="our checkpoint (.safetensors + .json) or a reference .ckpt/.pth/.safetensors (needs --config)")
    parser.add_argument("--data", required=True, help="shard root: a folder or an s3://, https://, hf:// URL")
    parser.add_argument("--split", default="test", help="split to predict")
    parser.add_argument("--out", required=True, help="output folder")
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

    args = infer_parser().parse_args(argv)
    _setup_logging()
    opts = InferOptions(
        checkpoint=args.checkpoint, data=args.data, split=args.split, out=args.out, config=args.config,
        output=args.output, batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        compression=args.compression, write=not args.no_write, limit=args.limit, progress=not args.no_progress,
    )

    def body() -> int:
        from trainer.data.sources import SourceURLError, check_source_url

        try:
            check_source_url(args.data)  # before loading a model: a typo in the URL fails at once
        except SourceURLError as exc:
            raise ConfigError(f"--data: {exc}") from None
        run_infer(opts)
        return 0

    return run_command("flair-infer", body, expected=_infer_errors())


def _infer_errors() -> tuple[type[BaseException], ...]:
    """What bad input to flair-infer raises: a config, a checkpoint, a selection, a shard."""
    from trainer.checkpointing import CheckpointError
    from trainer.data.sources import ShardIntegrityError
    from trainer.model import CheckpointMismatch

    return (ConfigError, CheckpointError, CheckpointMismatch, ShardIntegrityError, PackError, ValueError, KeyError)
