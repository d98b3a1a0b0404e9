"""Train FLAIR-UPerFuse on packed FLAIR-HUB shards.

    accelerate launch trainer/train.py --config configs/flair-hub [--set hyperparams.num_epochs=2 ...]
    flair-train --config configs/seed/LC-A.yaml            # the same, one process

One code path for one CPU, one GPU, many GPUs and many nodes (Accelerate: DDP, bf16/fp16, and
`--num_machines/--machine_rank/--main_process_ip` for several nodes). The file reads top to
bottom: `run` is the story (config -> accelerator -> data -> model -> optimiser -> resume -> epochs
-> report), and the steps it names follow it as top-level functions over one `Training` state
(`train_epoch` -> `forward_backward` / `optimizer_step` / `log_step`, `end_epoch` ->
`evaluate_and_checkpoint`, `finish`). Helpers live in modules named for what they do:
`train_config`, `losses`, `metrics`, `optim`, `train_checkpoint` (all checkpoint I/O: save, resume,
initial weights), `run_logs`, `report`, `data` (the loader), `model`.

The streaming loader splits the data per rank and per worker itself, so the loaders are never
handed to `accelerator.prepare` (Accelerate would re-shard or dispatch them).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # `accelerate launch trainer/train.py` puts trainer/ first on sys.path, where `data`, `model`,
    # `config`... would shadow other packages' imports; the package is imported as `trainer.*`.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

import argparse
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm import tqdm

from packer.cli_help import HelpFormatter, examples
from packer.command import error_line, run_command
from packer.errors import PackError
from trainer.train_checkpoint import (
    CheckpointError, Progress, export_best_model, init_weights, resume, save_checkpoint,
)
from trainer.config import ConfigError
from trainer.data.catalog import SelectionError
from trainer.data.loader import StreamingLoader
from trainer.data.sample import dates_key, pad_mask_key
from packer.storage.read import ShardIntegrityError, SourceError
from trainer.losses import CompositeLoss, NonFiniteLossError
from trainer.metrics import ConfusionMatrix, compute_metrics, task_class_names, task_class_weights
from trainer.model import CheckpointMismatch, build_model
from trainer.model.pretrained import check_available as check_pretrained_available
from trainer import reference_semantics
from trainer.optim import Schedule, build_optimizer
from trainer.report import write_report
from trainer.run_logs import SampleLog, StepLog
from trainer.tb_images import EvalImages
from trainer.train_config import dump_config, load_train_config, task_suffix
from trainer.unused_parameters import needs_unused_parameter_search


# ============================================================================================
# Entry points
# ============================================================================================
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flair-train", formatter_class=HelpFormatter,
        description="Train FLAIR-UPerFuse on packed FLAIR-HUB shards (docs/training.md). One process here; "
                    "`accelerate launch trainer/train.py` takes the same arguments for several GPUs or nodes.",
        epilog=examples(
            "flair-train --config LC-A --set data.source=shards/              # a built-in seed config",
            "flair-train --config configs/seed/LC-D.yaml my_run.yaml --set hyperparams.num_epochs=2",
            "flair-train --config demo --set data.source=s3://bucket/flair-hub train.mixed_precision=bf16",
        ))
    p.add_argument("--config", nargs="+", required=True, metavar="DIR_OR_YAML",
                   help="config directories / YAML files, or built-in names (LC-A ... LC-ALL, LPIS-A ... LPIS-K, "
                        "flair-hub, demo), merged in order (later ones override earlier ones)")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE", dest="overrides",
                   help="override config keys, e.g. --set hyperparams.num_epochs=2 data.source=s3://bucket/shards "
                        "(default: none)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


EXPECTED_ERRORS = (ConfigError, CheckpointError, CheckpointMismatch, SelectionError, SourceError,
                   ShardIntegrityError, NonFiniteLossError, PackError)
"""Bad input, reported as one line; OSErrors (missing files, full disks) and remote errors are too."""


def main(argv: list[str] | None = None) -> int:
    """Command line entry: errors that come from bad input are printed as one clear line
    (`packer.command`, the same for every command)."""
    args = parse_args(argv)

    def body() -> int:
        try:
            run(load_train_config(args.config, args.overrides))
        except torch.OutOfMemoryError as exc:
            print(error_line("flair-train", f"out of memory ({' '.join(str(exc).split())}). Lower "
                             "hyperparams.batch_size (and raise train.gradient_accumulation_steps to keep the "
                             "effective batch), or use train.mixed_precision: bf16."), file=sys.stderr)
            return 3
        return 0

    return run_command("flair-train", body, expected=EXPECTED_ERRORS,
                       interrupted="checkpoints on disk are intact: resume with "
                                   "tasks.train_tasks.resume_training_from_ckpt and paths.ckpt_model_path")


# ============================================================================================
# The run
# ============================================================================================
@dataclass
class RunResult:
    out_dir: Path
    step_losses: list[float] = field(default_factory=list)  # mean over ranks, one per optimizer step
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    best_value: float | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)  # the evaluation row of the best checkpoint


def run(cfg: Mapping[str, Any]) -> RunResult:
    """Train with a validated config (`train_config.load_train_config`)."""
    reference = reference_semantics.enabled(cfg)  # train.reference_semantics: the reference's step and metrics
    if reference:
        cfg = reference_semantics.prepare_config(cfg)
    hp, tc, paths = cfg["hyperparams"], cfg["train"], cfg["paths"]
    train_tasks = cfg["tasks"].get("train_tasks") or {}

    # ---------------------------------------------------------------- accelerator, seeds, output folder
    accelerator = make_accelerator(cfg)
    seed_everything(hp["seed"], tc["deterministic"])
    out_dir = Path(paths["out_folder"]) / (paths.get("out_model_name") or "flair-stream")
    if accelerator.is_main_process:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    say = accelerator.print

    # ---------------------------------------------------------------- pretrained weights, before any data
    from_ckpt = bool(train_tasks.get("resume_training_from_ckpt") or train_tasks.get("init_weights_only_from_ckpt"))
    if not from_ckpt:  # fail now, not after the data set-up, when ImageNet weights can be neither found nor fetched
        with accelerator.main_process_first():
            check_pretrained_available(cfg)

    # ---------------------------------------------------------------- data
    train_loader, val_loader = build_loaders(cfg, accelerator)
    batches_per_epoch = len(train_loader)

    # ---------------------------------------------------------------- model, loss, optimiser
    model = build_training_model(cfg, accelerator, reference, from_ckpt)
    loss_fn = CompositeLoss(cfg, reference=reference).to(accelerator.device)
    train_metrics = reference_semantics.TrainMetrics(cfg, accelerator.device) if reference else None
    if tc["find_unused_parameters"] == "auto" and accelerator.num_processes > 1:
        decide_unused_parameter_search(cfg, accelerator, model)
    optimizer = build_optimizer(cfg, model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = Schedule(cfg, optimizer, total_steps=hp["num_epochs"] * steps_per_epoch(cfg, batches_per_epoch))

    t = Training(cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, schedule=schedule,
                 loss_fn=loss_fn, train_loader=train_loader, val_loader=val_loader, out_dir=out_dir,
                 config_yaml=dump_config(cfg), reference=reference, train_metrics=train_metrics,
                 batches_per_epoch=batches_per_epoch)

    # ---------------------------------------------------------------- resume
    if train_tasks.get("resume_training_from_ckpt"):
        t.best_eval = resume(paths["ckpt_model_path"], accelerator, model, optimizer, schedule, train_loader,
                             t.progress, logs=(t.log, t.sample_log))
        say(f"resumed from {paths['ckpt_model_path']} at epoch {t.progress.epoch}, step {t.progress.step}")
    if accelerator.is_main_process and tc["tensorboard"]:
        t.writer = make_tensorboard(out_dir)
        t.images = EvalImages(val_loader, cfg, tc["tensorboard_images"])
    t.meter = Throughput()  # times the loop, not the set-up

    # ---------------------------------------------------------------- loop
    while t.progress.epoch < hp["num_epochs"] and not t.stop:
        ran_to_end, train_loss = train_epoch(t)
        if not ran_to_end:  # stopped in the middle of the epoch
            if t.step_limit_reached():
                save(t, "last", weights_only=False)  # a resumable state, exactly where we stopped
                say(f"stopped after {t.progress.step} optimizer steps (train.stop_after_steps)")
            break
        end_epoch(t, train_loss)

    # ---------------------------------------------------------------- report
    return finish(t)


@dataclass
class Training:
    """What the steps of one run share: built once by `run`, then read and advanced by
    `train_epoch`, `evaluate_and_checkpoint` and `finish`."""

    cfg: Mapping[str, Any]
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: Any
    schedule: Schedule
    loss_fn: CompositeLoss
    train_loader: StreamingLoader
    val_loader: StreamingLoader
    out_dir: Path
    config_yaml: str
    reference: bool  # train.reference_semantics
    train_metrics: Any  # reference_semantics.TrainMetrics, or None
    batches_per_epoch: int  # of this rank, fixed for the run (len(train_loader) counts what is left)
    progress: Progress = field(default_factory=Progress)
    best_eval: dict[str, Any] | None = None  # metrics, confusion matrices and row of the best evaluation
    writer: Any = None  # TensorBoard SummaryWriter (rank 0, train.tensorboard)
    images: EvalImages | None = None
    meter: "Throughput" = field(default_factory=lambda: Throughput())
    window_losses: list[torch.Tensor] = field(default_factory=list)  # batch losses of the current optimizer step
    stop: bool = False  # early stopping or train.stop_after_steps
    log: StepLog = field(init=False)
    sample_log: SampleLog = field(init=False)
    result: RunResult = field(init=False)

    def __post_init__(self) -> None:
        tc = self.cfg["train"]
        self.log = StepLog(self.out_dir / "metrics.jsonl" if self.accelerator.is_main_process else None)
        # Which samples each rank trained on, batch by batch: an audit trail of the data split.
        self.sample_log = SampleLog(self.out_dir / "samples" / f"rank{self.accelerator.process_index}.txt"
                                    if tc["log_samples"] else None)
        self.result = RunResult(out_dir=self.out_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def series(self) -> tuple[str, ...]:
        return self.train_loader.spec.series

    def step_limit_reached(self) -> bool:
        stop_after = self.cfg["train"]["stop_after_steps"]
        return stop_after is not None and self.progress.step >= stop_after


def build_loaders(cfg: Mapping[str, Any], accelerator: Accelerator) -> tuple[StreamingLoader, StreamingLoader]:
    """This rank's training and validation loaders; a split too small for one batch per rank is a config error."""
    data_cfg, batch_size = cfg["data"], cfg["hyperparams"]["batch_size"]
    rank, world = accelerator.process_index, accelerator.num_processes
    pin = accelerator.device.type == "cuda"
    train_loader = StreamingLoader.from_config(cfg, data_cfg["train_split"], rank=rank, world_size=world, pin_memory=pin)
    val_loader = StreamingLoader.from_config(cfg, data_cfg["val_split"], rank=rank, world_size=world,
                                             shuffle=False, augment=False, pin_memory=pin)
    if len(train_loader) == 0:
        raise ConfigError(f"data.train_split: {len(train_loader.selection)} samples give no batch of "
                          f"{batch_size} per rank on {world} rank(s)")
    accelerator.print(f"data: {len(train_loader.selection)} train / {len(val_loader.selection)} val samples; "
                      f"{len(train_loader)} batches of {batch_size} per rank per epoch on {world} rank(s)")
    return train_loader, val_loader


def build_training_model(cfg: Mapping[str, Any], accelerator: Accelerator, reference: bool,
                         from_ckpt: bool) -> torch.nn.Module:
    """The model, with its starting weights: ImageNet encoders unless the weights come from a
    checkpoint next (resume, or `init_weights_only_from_ckpt`, loaded here)."""
    model = build_model(cfg, pretrained=not from_ckpt)
    if reference:
        model.use_reference_semantics(reference_semantics.dropout_on(cfg))
    if (cfg["tasks"].get("train_tasks") or {}).get("init_weights_only_from_ckpt"):
        init_weights(model, cfg["paths"]["ckpt_model_path"])
        accelerator.print(f"model: weights initialised from {cfg['paths']['ckpt_model_path']}")
    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"model: {n_params / 1e6:.2f} M parameters, arch {cfg['models']['monotemp_model'].get('arch')}")
    return model


def steps_per_epoch(cfg: Mapping[str, Any], batches_per_epoch: int) -> int:
    return math.ceil(batches_per_epoch / cfg["train"]["gradient_accumulation_steps"])


def seed_everything(seed: int, deterministic: bool) -> None:
    set_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def train_epoch(t: Training) -> tuple[bool, float | None]:
    """One pass over the training split (what is left of it, after a resume in its middle).

    Returns whether it ran to its end and its mean optimizer-step loss.
    """
    loader, progress, total = t.train_loader, t.progress, t.batches_per_epoch
    if loader.position == 0:  # else: resuming in the middle of this epoch
        loader.set_epoch(progress.epoch)
    t.model.train()
    first_batch = total - len(loader)
    bar = tqdm(total=total, initial=first_batch, desc=f"epoch {progress.epoch + 1}/{t.cfg['hyperparams']['num_epochs']}",
               disable=not (t.accelerator.is_main_process and t.cfg["saving"].get("enable_progress_bar", True)),
               dynamic_ncols=True, leave=False)
    step_losses: list[float] = []
    last_batch = first_batch - 1
    t.window_losses.clear()
    t.meter.start()
    for i, batch in enumerate(timed(loader, t.meter), start=first_batch):
        last_batch = i
        terms, step_ends = forward_backward(t, batch, i)
        bar.update(1)
        if not step_ends:
            continue
        step_loss = optimizer_step(t, i)
        step_losses.append(step_loss)
        log_step(t, bar, step_loss, terms)
        within_epoch_checks(t, i)
        if t.stop:
            break
    bar.close()
    mean_loss = sum(step_losses) / len(step_losses) if step_losses else None
    return last_batch + 1 >= total, mean_loss


def forward_backward(t: Training, batch: Mapping[str, Any], i: int) -> tuple[Any, bool]:
    """Forward and backward of batch `i` of the epoch; gradients accumulate over
    `train.gradient_accumulation_steps` batches (fewer at the end of an epoch) and DDP syncs them
    on the last one. Returns the loss terms and whether this batch ends an optimizer step."""
    accum, total = t.cfg["train"]["gradient_accumulation_steps"], t.batches_per_epoch
    window_start = (i // accum) * accum
    window = min(accum, total - window_start)
    sync = i - window_start + 1 == window
    inputs = t.train_loader.to_model_inputs(batch, t.accelerator.device)
    with (contextlib.nullcontext() if sync else t.accelerator.no_sync(t.model)):
        with t.accelerator.autocast():
            out = forward(t.model, inputs, t.series)
            terms = t.loss_fn(out.tasks, out.aux, inputs, check_finite=False)
        t.accelerator.backward(terms.total / window)
    if t.train_metrics is not None:
        t.train_metrics.update(out.tasks, inputs)
    t.window_losses.append(terms.total.detach().float())
    t.sample_log.write(t.progress.epoch, i, batch["patch_id"], inputs["valid"])
    t.meter.samples += int(inputs["valid"].shape[0]) * t.accelerator.num_processes
    return terms, sync


def optimizer_step(t: Training, i: int) -> float:
    """Clip, step, advance the schedule and the counters; returns the step's loss (mean over ranks)."""
    step_loss = reduce_loss_and_check(t.accelerator, torch.stack(t.window_losses).mean(), t.progress)
    t.window_losses.clear()
    max_norm = t.cfg["train"]["max_grad_norm"]
    if max_norm is not None:
        t.accelerator.clip_grad_norm_(t.model.parameters(), max_norm)
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    if not t.optimizer.step_was_skipped:  # fp16: the grad scaler skips steps that overflowed
        t.schedule.after_step()
    t.progress.step += 1
    t.progress.micro_step = i + 1
    t.result.step_losses.append(step_loss)
    return step_loss


def log_step(t: Training, bar: Any, step_loss: float, terms: Any) -> None:
    """Progress bar, metrics.jsonl and (every `saving.progress_rate` steps) TensorBoard."""
    rates, lr, step = t.meter.rates(), t.schedule.lr(), t.progress.step
    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", sps=f"{rates['samples_per_s']:.1f}",
                    wait=f"{100 * rates['data_wait_share']:.0f}%")
    t.log.write({"kind": "step", "epoch": t.progress.epoch, "step": step, "loss": step_loss, "lr": lr, **rates})
    if t.writer is not None and step % t.cfg["saving"].get("progress_rate", 10) == 0:
        log_step_to_tensorboard(t.writer, step_loss, terms, lr, rates, step)


def within_epoch_checks(t: Training, i: int) -> None:
    """Evaluate / checkpoint / stop inside the epoch when the config asks for it (`train.val_every_n_steps`,
    `checkpoint_every_n_steps`, `stop_after_steps`)."""
    tc, step = t.cfg["train"], t.progress.step
    if tc["val_every_n_steps"] and step % tc["val_every_n_steps"] == 0 and i + 1 < t.batches_per_epoch:
        t.stop = evaluate_and_checkpoint(t, None)
        t.model.train()
    if tc["checkpoint_every_n_steps"] and step % tc["checkpoint_every_n_steps"] == 0:
        save(t, "last", weights_only=False)
    if t.step_limit_reached():
        t.stop = True


def end_epoch(t: Training, train_loss: float | None) -> None:
    """Count the epoch, evaluate, keep the best checkpoint and the last one."""
    saving = t.cfg["saving"]
    t.progress.epoch += 1
    t.progress.micro_step = 0
    if t.writer is not None and train_loss is not None:
        t.writer.add_scalar("train/epoch_loss", train_loss, t.progress.step)
    if evaluate_and_checkpoint(t, train_loss):
        t.stop = True
        t.accelerator.print(f"early stopping: {saving.get('ckpt_monitor', 'val_miou')} did not improve for "
                            f"{t.progress.bad_evals} evaluation(s)")
    if saving.get("ckpt_save_also_last", True) or t.cfg["train"]["checkpoint_every_n_steps"] is not None:
        save(t, "last", weights_only=saving.get("ckpt_weights_only", False))


def evaluate_and_checkpoint(t: Training, train_loss: float | None) -> bool:
    """Validate, log, keep the best checkpoint; True when early stopping says stop."""
    cfg, accelerator, progress, saving = t.cfg, t.accelerator, t.progress, t.cfg["saving"]
    limit = cfg["train"]["limit_val_batches"]
    if t.reference:
        ev = reference_semantics.evaluate(cfg, accelerator, t.model, t.loss_fn, t.val_loader,
                                          lambda ld: timed(ld, Throughput()), forward, t.series, limit)
    else:
        ev = evaluate(cfg, accelerator, t.model, t.loss_fn, t.val_loader, t.series, limit)
    row = {"epoch": progress.epoch, "step": progress.step, **ev["scalars"]}
    if train_loss is not None:
        row["train_loss"] = train_loss
        if t.train_metrics is not None:  # logged at the end of a training epoch, as the reference does
            row.update(t.train_metrics.epoch_scalars(accelerator), lr=t.schedule.lr())
    progress.history.append(row)
    t.result.history.append(row)
    t.schedule.after_validation(ev["scalars"]["val_loss"])
    t.log.write({"kind": "eval", **row, "lr": t.schedule.lr()})
    if t.writer is not None and t.reference:
        reference_semantics.log_to_tensorboard(t.writer, row, progress.step)
    elif t.writer is not None:
        log_eval_to_tensorboard(t.writer, row, ev["metrics"], progress.step)
        t.images.log(t.writer, accelerator.unwrap_model(t.model), lambda m, x: forward(m, x, t.series),
                     accelerator.device, ev, progress.step)
    monitor, mode = saving.get("ckpt_monitor", "val_miou"), saving.get("ckpt_monitor_mode", "max")
    value = row.get(monitor)
    if value is None:  # train_loss is only known at the end of an epoch
        return False
    improved = progress.improved(value, mode)
    if improved:
        t.best_eval = {"metrics": ev["metrics"], "confmats": ev["confmats"], "scalars": row}
        save(t, "best", weights_only=saving.get("ckpt_weights_only", False))
        export_best_model(accelerator, t.model, t.ckpt_dir, t.config_yaml)
    accelerator.print(f"eval at epoch {progress.epoch} step {progress.step}: "
                      + " ".join(f"{k}={v:.4f}" for k, v in ev["scalars"].items() if k.count("_") == 1)
                      + f" | best {monitor}={progress.best_value:.4f}")
    # Lightning's EarlyStopping: stop once `patience` evaluations in a row did not improve.
    patience = saving.get("ckpt_earlystopping_patience")
    return not improved and patience is not None and progress.bad_evals >= patience


def save(t: Training, name: str, weights_only: bool) -> None:
    """`checkpoints/<name>.ckpt` (`train_checkpoint.save_checkpoint`: every rank takes part)."""
    save_checkpoint(t.ckpt_dir / f"{name}.ckpt", t.accelerator, t.model, t.optimizer, t.schedule, t.train_loader,
                    t.progress, t.config_yaml, weights_only, t.best_eval, logs=(t.log, t.sample_log))


def finish(t: Training) -> RunResult:
    """Write the report of the best checkpoint, close the logs, say what comes next."""
    cfg, tc, saving, progress, result = t.cfg, t.cfg["train"], t.cfg["saving"], t.progress, t.result
    main_proc = t.accelerator.is_main_process
    result.best_value = progress.best_value
    if t.best_eval is not None:
        result.best_metrics = t.best_eval["scalars"]
    if main_proc and tc["report"] and t.best_eval is not None:
        monitor, mode = saving.get("ckpt_monitor", "val_miou"), saving.get("ckpt_monitor_mode", "max")
        summary = {
            "monitor": f"{monitor} ({mode})", "best value": progress.best_value, "best epoch": progress.best_epoch,
            "epochs run": progress.epoch, "optimizer steps": progress.step, "world size": t.accelerator.num_processes,
            "mixed precision": tc["mixed_precision"], "parameters": f"{sum(p.numel() for p in t.model.parameters()):,}",
            **{k: round(v, 4) for k, v in t.meter.totals().items()},
        }
        folder = write_report(t.out_dir, t.best_eval["metrics"], {k: c.numpy() if hasattr(c, "numpy") else c
                                                                  for k, c in t.best_eval["confmats"].items()},
                              t.config_yaml, summary)
        t.accelerator.print(f"report: {folder}")
    if t.writer is not None:
        t.writer.close()
    t.train_loader.close()  # their worker processes persist across epochs until now
    t.val_loader.close()
    if main_proc and (cfg["tasks"].get("predict") or cfg["tasks"].get("metrics_only")):
        t.accelerator.print(next_step_message(cfg, t.ckpt_dir, t.out_dir))
    t.accelerator.wait_for_everyone()
    t.accelerator.end_training()
    return result


def next_step_message(cfg: Mapping[str, Any], ckpt_dir: Path, out_dir: Path) -> str:
    """What the reference's `tasks.predict` / `metrics_only` would run next, as a flair-infer command.

    The reference predicts the test split after training in the same process; prediction is
    flair-infer's job here (the trainer does not import inference), so we print its command.
    """
    data = cfg["data"]
    return (f"tasks.predict: predict the {data['test_split']} split with: flair-infer --checkpoint "
            f"{ckpt_dir / 'best_model.safetensors'} --data {data['source']} --split {data['test_split']} "
            f"--out {out_dir / 'predictions'}")


# ============================================================================================
# Helpers of the loop (kept here because they are the loop's own logic)
# ============================================================================================
def make_accelerator(cfg: Mapping[str, Any]) -> Accelerator:
    """Accelerator from the config: device, mixed precision, DDP's find_unused_parameters (for
    `auto`, decided once the model exists: `decide_unused_parameter_search`)."""
    tc, hw = cfg["train"], cfg.get("hardware") or {}
    cpu = hw.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if tc["mixed_precision"] == "fp16" and cpu:
        raise ConfigError("train.mixed_precision: fp16 needs a GPU (use bf16 or 'no' on CPU)")
    if hw.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        print("flair-train: hardware.accelerator is gpu but no CUDA device is visible; running on the CPU",
              file=sys.stderr)
    unused = tc["find_unused_parameters"]
    return Accelerator(cpu=cpu, mixed_precision=tc["mixed_precision"],
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused is True)])


def decide_unused_parameter_search(cfg: Mapping[str, Any], accelerator: Accelerator, model: torch.nn.Module) -> None:
    """`find_unused_parameters: auto`: ask the model which parameters never get a gradient
    (`trainer.unused_parameters`) and tell DDP before the model is wrapped."""
    model.to(accelerator.device)
    needed, unused = needs_unused_parameter_search(model, cfg, accelerator.device)
    accelerator.ddp_handler.find_unused_parameters = needed
    shown = ", ".join(sorted({n.rsplit(".", 1)[0] for n in unused})[:6])
    accelerator.print(f"ddp: {len(unused)} of {sum(1 for _ in model.parameters())} parameters never get a gradient"
                      + (f" ({shown}{', ...' if len(unused) > 6 else ''})" if unused else "")
                      + f"; find_unused_parameters={needed}")


def forward(model: torch.nn.Module, inputs: Mapping[str, Any], series: tuple[str, ...]) -> Any:
    """Call the model with the loader's batch layout (see `trainer.model` for the contract)."""
    dates = {m: inputs[dates_key(m)] for m in series}
    masks = {m: inputs[pad_mask_key(m)] for m in series}
    return model(inputs, dates, masks)


class Throughput:
    """Samples/s and the share of wall time spent waiting for the loader, over a sliding window."""

    def __init__(self) -> None:
        self.samples = 0
        self.wait = 0.0
        self._t0 = time.perf_counter()
        self._last = (self._t0, 0, 0.0)
        self.total_samples = 0
        self.total_wait = 0.0
        self.total_time = 0.0

    def start(self) -> None:
        self._flush()
        self._t0 = time.perf_counter()
        self.samples, self.wait = 0, 0.0
        self._last = (self._t0, 0, 0.0)

    def rates(self) -> dict[str, float]:
        now = time.perf_counter()
        t, s, w = self._last
        dt = max(now - t, 1e-9)
        out = {"samples_per_s": (self.samples - s) / dt, "data_wait_share": min(1.0, (self.wait - w) / dt)}
        self._last = (now, self.samples, self.wait)
        return out

    def _flush(self) -> None:
        self.total_samples += self.samples
        self.total_wait += self.wait
        self.total_time += time.perf_counter() - self._t0

    def totals(self) -> dict[str, float]:
        self._flush()
        self._t0, self.samples, self.wait = time.perf_counter(), 0, 0.0
        t = max(self.total_time, 1e-9)
        return {"mean samples/s": self.total_samples / t, "mean data-wait share": self.total_wait / t}


def timed(loader: Any, meter: Throughput) -> Iterator[Any]:
    """Iterate `loader`, adding the time spent waiting for each batch to `meter.wait`.

    The DataLoader draws its base seed from torch's global generator when its iterator is
    created; doing that inside `fork_rng` keeps the training RNG stream (dropout, modality
    dropout) identical whether or not the run was resumed.
    """
    it = iter(loader)
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        batch = next(it, None)
    while batch is not None:
        meter.wait += time.perf_counter() - t
        yield batch
        t = time.perf_counter()
        batch = next(it, None)


def reduce_loss_and_check(accelerator: Accelerator, loss: torch.Tensor, progress: Progress) -> float:
    """Mean loss over ranks; every rank raises together on a NaN/inf loss (no rank left hanging)."""
    value = loss.detach().float().reshape(1)
    if accelerator.num_processes > 1:
        value = accelerator.reduce(value.to(accelerator.device), reduction="mean")
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteLossError(
            f"training loss is {v} at epoch {progress.epoch}, step {progress.step + 1}: check hyperparams.learning_rate, "
            "the input normalisation and train.mixed_precision (fp16 overflows more easily than bf16); "
            "the last checkpoint on disk is intact")
    return v


@torch.no_grad()
def evaluate(cfg: Mapping[str, Any], accelerator: Accelerator, model: torch.nn.Module, loss_fn: CompositeLoss,
             loader: StreamingLoader, series: tuple[str, ...], limit: int | None) -> dict[str, Any]:
    """Validation loss and metrics over the whole split, summed across ranks.

    Samples repeated only to equalise ranks (`valid == False`) are left out of loss and metrics.
    """
    model.eval()
    device = accelerator.device
    tasks = list(cfg["labels"])
    cms = {t: ConfusionMatrix(len(cfg["labels_configs"][t]["value_name"]), device) for t in tasks}
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    loader.set_epoch(0)
    for i, batch in enumerate(timed(loader, Throughput())):
        if limit is not None and i >= limit:
            break
        inputs = loader.to_model_inputs(batch, device)
        # The forward runs even on a batch of padding only: DDP's forward may hold a collective
        # (buffer broadcast) that the other ranks wait for.
        with accelerator.autocast():
            out = forward(model, inputs, series)
        keep = inputs["valid"].bool()
        if not keep.any():
            continue
        sub = {t: inputs[t][keep] for t in tasks}
        logits = {t: out.tasks[t][keep] for t in tasks}
        aux = {t: {m: v[keep] for m, v in out.aux.get(t, {}).items()} for t in tasks}
        terms = loss_fn(logits, aux, sub, check_finite=False)
        n = keep.sum()
        loss_sum += terms.total.double() * n
        count += n
        for t in tasks:
            cms[t].update(logits[t].argmax(dim=1), sub[t])
    if accelerator.num_processes > 1:
        loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        count = accelerator.reduce(count, reduction="sum")
    for cm in cms.values():
        cm.all_reduce(accelerator)
    metrics = {t: compute_metrics(cms[t], task_class_weights(cfg, t), task_class_names(cfg, t)) for t in tasks}
    scalars: dict[str, float] = {"val_loss": float(loss_sum / count) if count > 0 else float("nan")}
    for key in ("miou", "oa", "wiou", "mf1"):
        # Averaged over tasks, like the reference's val_miou; each task's own value is logged too.
        scalars[f"val_{key}"] = sum(metrics[t][key] for t in tasks) / len(tasks)
        for t in tasks:
            scalars[f"val_{key}_{task_suffix(t)}"] = metrics[t][key]
    return {"scalars": scalars, "metrics": metrics, "confmats": {t: cms[t].matrix.cpu() for t in tasks}}


# ============================================================================================
# TensorBoard
# ============================================================================================
def log_step_to_tensorboard(writer: Any, loss: float, terms: Any, lr: float, rates: Mapping[str, float], step: int) -> None:
    writer.add_scalar("train/loss", loss, step)
    for task, v in terms.main.items():
        writer.add_scalar(f"train/loss_main_{task_suffix(task)}", float(v.detach()), step)
    for task, v in terms.aux.items():
        writer.add_scalar(f"train/loss_aux_{task_suffix(task)}", float(v.detach()), step)
    writer.add_scalar("train/lr", lr, step)
    for k, v in rates.items():
        writer.add_scalar(f"throughput/{k}", v, step)


def log_eval_to_tensorboard(writer: Any, row: Mapping[str, float], metrics: Mapping[str, Any], step: int) -> None:
    for k, v in row.items():
        if k not in ("epoch", "step"):
            writer.add_scalar(f"val/{k}" if k.startswith("val_") else f"train/{k}", v, step)
    for task, m in metrics.items():
        for c in m["per_class"]:
            if c["evaluated"]:
                writer.add_scalar(f"val_iou_{task_suffix(task)}/{c['index']:02d}_{c['name']}", c["iou"], step)


def make_tensorboard(out_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


if __name__ == "__main__":
    sys.exit(main())
