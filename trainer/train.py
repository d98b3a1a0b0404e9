"""Train FLAIR-UPerFuse on packed FLAIR-HUB shards.

    accelerate launch trainer/train.py --config configs/flair-hub [--set hyperparams.num_epochs=2 ...]
    flair-train --config configs/seed/LC-A.yaml            # the same, one process

One code path for one CPU, one GPU, many GPUs and many nodes (Accelerate: DDP, bf16/fp16, and
`--num_machines/--machine_rank/--main_process_ip` for several nodes). The file reads top to
bottom: config -> accelerator -> data -> model -> optimiser -> resume -> loop (step, log, evaluate,
checkpoint) -> report. Helpers live in modules named for what they do: `train_config`, `losses`,
`metrics`, `optim`, `checkpointing`, `report`, `data` (the loader), `model`.

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
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from tqdm import tqdm

from packer.atomic import write_text_atomic
from packer.cli_help import HelpFormatter, examples
from packer.command import error_line, run_command
from packer.errors import PackError
from trainer.checkpointing import (
    CheckpointError, Progress, atomic_torch_save, build_checkpoint, capture_rng, check_model_state,
    load_checkpoint, restore_rng,
)
from trainer.config import ConfigError
from trainer.data.catalog import SelectionError
from trainer.data.loader import StreamingLoader
from trainer.data.sample import dates_key, pad_mask_key
from trainer.data.sources import ShardIntegrityError, SourceError
from trainer.losses import CompositeLoss, NonFiniteLossError
from trainer.metrics import ConfusionMatrix, compute_metrics, task_class_names, task_class_weights
from trainer.model import CheckpointMismatch, build_model, load_reference_weights, save_model
from trainer.model.pretrained import check_available as check_pretrained_available
from trainer import reference_semantics
from trainer.optim import Schedule, build_optimizer
from trainer.report import write_report
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
    hp, tc, saving, data_cfg = cfg["hyperparams"], cfg["train"], cfg["saving"], cfg["data"]
    train_tasks = cfg["tasks"].get("train_tasks") or {}

    # ---------------------------------------------------------------- accelerator
    accelerator = make_accelerator(cfg)
    set_seed(hp["seed"])
    if tc["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    out_dir = Path(cfg["paths"]["out_folder"]) / (cfg["paths"].get("out_model_name") or "flair-stream")
    ckpt_dir = out_dir / "checkpoints"
    main_proc = accelerator.is_main_process
    if main_proc:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = dump_config(cfg)
    say = accelerator.print

    # ---------------------------------------------------------------- pretrained weights, before any data
    from_ckpt = bool(train_tasks.get("resume_training_from_ckpt") or train_tasks.get("init_weights_only_from_ckpt"))
    if not from_ckpt:  # fail now, not after the data set-up, when ImageNet weights can be neither found nor fetched
        with accelerator.main_process_first():
            check_pretrained_available(cfg)

    # ---------------------------------------------------------------- data
    rank, world = accelerator.process_index, accelerator.num_processes
    pin = accelerator.device.type == "cuda"
    train_loader = StreamingLoader.from_config(cfg, data_cfg["train_split"], rank=rank, world_size=world, pin_memory=pin)
    val_loader = StreamingLoader.from_config(cfg, data_cfg["val_split"], rank=rank, world_size=world,
                                             shuffle=False, augment=False, pin_memory=pin)
    batches_per_epoch = len(train_loader)
    accum = tc["gradient_accumulation_steps"]
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    if batches_per_epoch == 0:
        raise ConfigError(f"data.train_split: {len(train_loader.selection)} samples give no batch of "
                          f"{hp['batch_size']} per rank on {world} rank(s)")
    say(f"data: {len(train_loader.selection)} train / {len(val_loader.selection)} val samples; "
        f"{batches_per_epoch} batches of {hp['batch_size']} per rank per epoch on {world} rank(s)")

    # ---------------------------------------------------------------- model
    model = build_model(cfg, pretrained=not from_ckpt)  # weights from a checkpoint: no ImageNet load first
    if reference:
        model.use_reference_semantics(reference_semantics.dropout_on(cfg))
    if train_tasks.get("init_weights_only_from_ckpt"):
        init_weights(model, cfg["paths"]["ckpt_model_path"])
        say(f"model: weights initialised from {cfg['paths']['ckpt_model_path']}")
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e6:.2f} M parameters, arch {cfg['models']['monotemp_model'].get('arch')}")
    loss_fn = CompositeLoss(cfg, reference=reference).to(accelerator.device)
    train_metrics = reference_semantics.TrainMetrics(cfg, accelerator.device) if reference else None

    if tc["find_unused_parameters"] == "auto" and world > 1:
        decide_unused_parameter_search(cfg, accelerator, model)

    # ---------------------------------------------------------------- optimiser
    optimizer = build_optimizer(cfg, model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = Schedule(cfg, optimizer, total_steps=hp["num_epochs"] * steps_per_epoch)
    progress = Progress()
    best_eval: dict[str, Any] | None = None

    log = StepLog(out_dir / "metrics.jsonl" if main_proc else None)
    # Which samples each rank trained on, batch by batch: an audit trail of the data split.
    sample_log = SampleLog(out_dir / "samples" / f"rank{rank}.txt" if tc["log_samples"] else None)

    # ---------------------------------------------------------------- resume
    if train_tasks.get("resume_training_from_ckpt"):
        best_eval = resume(cfg["paths"]["ckpt_model_path"], accelerator, model, optimizer, schedule, train_loader,
                           progress, logs=(log, sample_log))
        say(f"resumed from {cfg['paths']['ckpt_model_path']} at epoch {progress.epoch}, step {progress.step}")

    writer = make_tensorboard(out_dir) if (main_proc and tc["tensorboard"]) else None
    images = EvalImages(val_loader, cfg, tc["tensorboard_images"]) if writer is not None else None
    result = RunResult(out_dir=out_dir)
    series = train_loader.spec.series
    monitor, mode = saving.get("ckpt_monitor", "val_miou"), saving.get("ckpt_monitor_mode", "max")
    patience = saving.get("ckpt_earlystopping_patience")
    save_last = saving.get("ckpt_save_also_last", True) or tc["checkpoint_every_n_steps"] is not None
    weights_only = saving.get("ckpt_weights_only", False)
    log_every = saving.get("progress_rate", 10)
    stop_after = tc["stop_after_steps"]
    meter = Throughput()

    def save(name: str, only_weights: bool) -> None:
        save_checkpoint(ckpt_dir / f"{name}.ckpt", accelerator, model, optimizer, schedule, train_loader, progress,
                        config_yaml, only_weights, best_eval, logs=(log, sample_log))

    def evaluate_and_checkpoint(train_loss: float | None) -> bool:
        """Validate, log, keep the best checkpoint; True when early stopping says stop."""
        nonlocal best_eval
        if reference:
            ev = reference_semantics.evaluate(cfg, accelerator, model, loss_fn, val_loader,
                                              lambda ld: timed(ld, Throughput()), forward, series, tc["limit_val_batches"])
        else:
            ev = evaluate(cfg, accelerator, model, loss_fn, val_loader, series, tc["limit_val_batches"])
        row = {"epoch": progress.epoch, "step": progress.step, **ev["scalars"]}
        if train_loss is not None:
            row["train_loss"] = train_loss
            if train_metrics is not None:  # logged at the end of a training epoch, as the reference does
                row.update(train_metrics.epoch_scalars(accelerator), lr=schedule.lr())
        progress.history.append(row)
        result.history.append(row)
        schedule.after_validation(ev["scalars"]["val_loss"])
        log.write({"kind": "eval", **row, "lr": schedule.lr()})
        if writer is not None and reference:
            reference_semantics.log_to_tensorboard(writer, row, progress.step)
        elif writer is not None:
            log_eval_to_tensorboard(writer, row, ev["metrics"], progress.step)
            images.log(writer, accelerator.unwrap_model(model), lambda m, x: forward(m, x, series), accelerator.device,
                       ev, progress.step)
        value = row.get(monitor)
        if value is None:  # train_loss is only known at the end of an epoch
            return False
        improved = progress.improved(value, mode)
        if improved:
            best_eval = {"metrics": ev["metrics"], "confmats": ev["confmats"], "scalars": row}
            save("best", weights_only)
            if main_proc:  # weights + model config for inference (trainer.model.load_model)
                save_model(accelerator.unwrap_model(model), ckpt_dir / "best_model", train_config_yaml=config_yaml)
        say(f"eval at epoch {progress.epoch} step {progress.step}: "
            + " ".join(f"{k}={v:.4f}" for k, v in ev["scalars"].items() if k.count("_") == 1)
            + f" | best {monitor}={progress.best_value:.4f}")
        # Lightning's EarlyStopping: stop once `patience` evaluations in a row did not improve.
        return not improved and patience is not None and progress.bad_evals >= patience

    # ---------------------------------------------------------------- loop
    stop = False
    while progress.epoch < hp["num_epochs"] and not stop:
        if train_loader.position == 0:  # else: resuming in the middle of this epoch
            train_loader.set_epoch(progress.epoch)
        model.train()
        first_batch = batches_per_epoch - len(train_loader)
        bar = tqdm(total=batches_per_epoch, initial=first_batch, desc=f"epoch {progress.epoch + 1}/{hp['num_epochs']}",
                   disable=not (main_proc and saving.get("enable_progress_bar", True)), dynamic_ncols=True, leave=False)
        epoch_loss_sum, epoch_steps, last_batch = 0.0, 0, first_batch - 1
        window_losses: list[torch.Tensor] = []
        meter.start()
        for i, batch in enumerate(timed(train_loader, meter), start=first_batch):
            last_batch = i
            # ---- step: gradients accumulate over `accum` batches (fewer at the end of an epoch)
            window_start = (i // accum) * accum
            window = min(accum, batches_per_epoch - window_start)
            sync = i - window_start + 1 == window
            inputs = train_loader.to_model_inputs(batch, accelerator.device)
            with (contextlib.nullcontext() if sync else accelerator.no_sync(model)):
                with accelerator.autocast():
                    out = forward(model, inputs, series)
                    terms = loss_fn(out.tasks, out.aux, inputs, check_finite=False)
                accelerator.backward(terms.total / window)
            if train_metrics is not None:
                train_metrics.update(out.tasks, inputs)
            window_losses.append(terms.total.detach().float())
            sample_log.write(progress.epoch, i, batch["patch_id"], inputs["valid"])
            meter.samples += int(inputs["valid"].shape[0]) * world
            bar.update(1)
            if not sync:
                continue
            step_loss = reduce_loss_and_check(accelerator, torch.stack(window_losses).mean(), progress)
            window_losses.clear()
            if tc["max_grad_norm"] is not None:
                accelerator.clip_grad_norm_(model.parameters(), tc["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not optimizer.step_was_skipped:  # fp16: the grad scaler skips steps that overflowed
                schedule.after_step()
            progress.step += 1
            progress.micro_step = i + 1
            epoch_loss_sum += step_loss
            epoch_steps += 1
            result.step_losses.append(step_loss)

            # ---- log
            rates = meter.rates()
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{schedule.lr():.2e}", sps=f"{rates['samples_per_s']:.1f}",
                            wait=f"{100 * rates['data_wait_share']:.0f}%")
            log.write({"kind": "step", "epoch": progress.epoch, "step": progress.step, "loss": step_loss,
                       "lr": schedule.lr(), **rates})
            if writer is not None and progress.step % log_every == 0:
                log_step_to_tensorboard(writer, step_loss, terms, schedule.lr(), rates, progress.step)

            # ---- evaluate / checkpoint inside the epoch when asked to
            if tc["val_every_n_steps"] and progress.step % tc["val_every_n_steps"] == 0 and i + 1 < batches_per_epoch:
                stop = evaluate_and_checkpoint(None)
                model.train()
            if tc["checkpoint_every_n_steps"] and progress.step % tc["checkpoint_every_n_steps"] == 0:
                save("last", False)
            if stop_after is not None and progress.step >= stop_after:
                stop = True
            if stop:
                break
        bar.close()
        if last_batch + 1 < batches_per_epoch:  # left in the middle of the epoch
            if stop_after is not None and progress.step >= stop_after:
                save("last", False)  # a resumable state, exactly where we stopped
                say(f"stopped after {progress.step} optimizer steps (train.stop_after_steps)")
            break

        # ---- end of epoch: evaluate, keep best and last
        progress.epoch += 1
        progress.micro_step = 0
        train_loss = epoch_loss_sum / epoch_steps if epoch_steps else None
        if writer is not None and train_loss is not None:
            writer.add_scalar("train/epoch_loss", train_loss, progress.step)
        if evaluate_and_checkpoint(train_loss):
            stop = True
            say(f"early stopping: {monitor} did not improve for {progress.bad_evals} evaluation(s)")
        if save_last:
            save("last", weights_only)

    # ---------------------------------------------------------------- report
    result.best_value = progress.best_value
    if best_eval is not None:
        result.best_metrics = best_eval["scalars"]
    if main_proc and tc["report"] and best_eval is not None:
        summary = {
            "monitor": f"{monitor} ({mode})", "best value": progress.best_value, "best epoch": progress.best_epoch,
            "epochs run": progress.epoch, "optimizer steps": progress.step, "world size": world,
            "mixed precision": tc["mixed_precision"], "parameters": f"{n_params:,}",
            **{k: round(v, 4) for k, v in meter.totals().items()},
        }
        folder = write_report(out_dir, best_eval["metrics"], {t: c.numpy() if hasattr(c, "numpy") else c
                                                              for t, c in best_eval["confmats"].items()},
                              config_yaml, summary)
        say(f"report: {folder}")
    if writer is not None:
        writer.close()
    if main_proc and (cfg["tasks"].get("predict") or cfg["tasks"].get("metrics_only")):
        say(next_step_message(cfg, ckpt_dir, out_dir))
    accelerator.wait_for_everyone()
    accelerator.end_training()
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
# Checkpoints, resume, initial weights
# ============================================================================================
def save_checkpoint(path: Path, accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, schedule: Schedule,
                    loader: StreamingLoader, progress: Progress, config_yaml: str, weights_only: bool,
                    best_eval: Mapping[str, Any] | None, logs: tuple["StepLog", "SampleLog"] | None = None) -> None:
    """Every rank contributes its RNG and loader state, and how far its logs go (to rewind them on
    resume); rank 0 writes (temp file + rename)."""
    ends = {"metrics": logs[0].end(), "samples": logs[1].end()} if logs is not None else {}
    per_rank = gather_object([{"rng": capture_rng(), "loader": loader.state_dict(), "logs": ends}])
    if accelerator.is_main_process:
        scaler = getattr(accelerator, "scaler", None)
        ckpt = build_checkpoint(
            weights_only=weights_only, model_state=accelerator.unwrap_model(model).state_dict(), progress=progress,
            config_yaml=config_yaml, optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
            schedule=schedule, scaler=scaler, per_rank=per_rank, world_size=accelerator.num_processes)
        if best_eval is not None:
            ckpt["best_eval"] = {"metrics": best_eval["metrics"], "scalars": best_eval["scalars"],
                                 "confmats": {t: torch.as_tensor(c).cpu() for t, c in best_eval["confmats"].items()}}
        atomic_torch_save(ckpt, path)
    accelerator.wait_for_everyone()


def resume(path: str, accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, schedule: Schedule,
           loader: StreamingLoader, progress: Progress,
           logs: tuple["StepLog", "SampleLog"] | None = None) -> dict[str, Any] | None:
    """Restore the full training state from one of our checkpoints; returns the best evaluation so far.

    `logs` (metrics.jsonl, samples/rank<r>.txt) are cut back to where they stood at the checkpoint,
    so the steps replayed after it appear once, not twice.
    """
    ckpt = load_checkpoint(path)
    if ckpt["kind"] != "full":
        raise CheckpointError(f"{path}: a weights-only checkpoint cannot resume a run "
                              "(use tasks.train_tasks.init_weights_only_from_ckpt to start from its weights)")
    inner = accelerator.unwrap_model(model)
    check_model_state(inner, ckpt["model"], path)
    inner.load_state_dict(ckpt["model"])
    (optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer).load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restored = Progress.from_state(ckpt["progress"])
    for name in restored.__dataclass_fields__:
        setattr(progress, name, getattr(restored, name))
    per_rank = ckpt["per_rank"]
    rank = accelerator.process_index
    if ckpt["world_size"] != accelerator.num_processes:
        accelerator.print(f"warning: checkpoint written by {ckpt['world_size']} process(es), resuming on "
                          f"{accelerator.num_processes}: the data continues from the same position but random "
                          "draws (dropout, augmentation order) will differ from an uninterrupted run")
        state = per_rank[0]
    else:
        state = per_rank[rank]
    try:
        loader.load_state_dict(state["loader"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: loader state does not fit this data selection ({exc})") from None
    restore_rng(state["rng"])
    if logs is not None:
        rewind_logs(logs, per_rank, rank, progress)
    best = ckpt.get("best_eval")
    return dict(best) if best else None


def init_weights(model: torch.nn.Module, path: str) -> None:
    """Start from weights only: one of our training checkpoints, our exported safetensors, or a
    reference release (`.ckpt` / `.pth` / `.safetensors`); keys and shapes must match exactly."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found (paths.ckpt_model_path)")
    if p.suffix == ".ckpt":
        try:
            ckpt = load_checkpoint(p)
        except CheckpointError:
            ckpt = None  # not ours: maybe a reference Lightning checkpoint
        if ckpt is not None:
            check_model_state(model, ckpt["model"], str(p))
            model.load_state_dict(ckpt["model"])
            return
    try:
        load_reference_weights(model, p)
    except (ValueError, CheckpointMismatch) as exc:
        raise CheckpointError(str(exc)) from None


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


class AppendLog:
    """A log file that only grows, one line per record; `end()` and `rewind()` let a resumed run
    cut it back to where it stood at its checkpoint (opened in append mode, it would otherwise
    hold the replayed steps twice)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, text: str) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)

    def end(self) -> int | None:
        """Bytes written so far (None when this rank keeps no such log)."""
        if self.path is None:
            return None
        return self.path.stat().st_size if self.path.is_file() else 0

    def rewind(self, end: int | None = None, keep: Callable[[str], bool] | None = None) -> None:
        """Cut the file at byte `end`, or (a checkpoint older than this rule) keep the lines `keep(line)`."""
        if self.path is None or not self.path.is_file():
            return
        if end is not None:
            if self.path.stat().st_size > end:
                with open(self.path, "r+b") as fh:
                    fh.truncate(end)
        elif keep is not None:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            write_text_atomic(self.path, "".join(line for line in lines if keep(line)))


class SampleLog(AppendLog):
    """`samples/rank<r>.txt`: `epoch batch patch_id valid` per trained sample (`train.log_samples`)."""

    def write(self, epoch: int, batch_index: int, patch_ids: list[str], valid: torch.Tensor) -> None:
        if self.path is not None:
            rows = zip(patch_ids, valid.tolist())
            self.append("".join(f"{epoch} {batch_index} {pid} {int(ok)}\n" for pid, ok in rows))


class StepLog(AppendLog):
    """`metrics.jsonl`: one JSON line per optimizer step and per evaluation (rank 0 only)."""

    def write(self, row: Mapping[str, Any]) -> None:
        self.append(json.dumps(row) + "\n")


def rewind_logs(logs: tuple[StepLog, SampleLog], per_rank: list[Mapping[str, Any]], rank: int,
                progress: Progress) -> None:
    """Cut metrics.jsonl (rank 0) and this rank's sample log back to the checkpoint.

    A checkpoint records each log's length; one written before that rule is cut by content:
    metrics up to its optimizer step, samples before its (epoch, batch).
    """
    metrics, samples = logs
    mine = per_rank[rank] if rank < len(per_rank) else {}
    ends = mine.get("logs")
    if ends is not None:
        metrics.rewind(per_rank[0].get("logs", {}).get("metrics"))
        samples.rewind(ends.get("samples"))
        return
    metrics.rewind(keep=lambda line: json.loads(line).get("step", 0) <= progress.step)
    samples.rewind(keep=lambda line: tuple(map(int, line.split()[:2])) < (progress.epoch, progress.micro_step))


if __name__ == "__main__":
    sys.exit(main())
