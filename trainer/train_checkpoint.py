"""Training checkpoints, all their I/O in one place: save, resume, start from weights only.

Full-state files for exact resume, written so that a crash never corrupts them.

A checkpoint is one torch file holding only tensors, numbers, strings, lists and dicts, so it is
read back with `torch.load(weights_only=True)` (nothing is unpickled). It is written to a
temporary name in the same folder, flushed to disk, then renamed over the old one: a reader
sees either the previous complete file or the new complete file, never half of one.

Full state (`kind: "full"`): model weights, optimizer, LR schedule, AMP grad scaler, the
progress counters and early-stopping record (`Progress`), and per rank its RNG states and its
loader position. Weights only (`kind: "weights"`, `saving.ckpt_weights_only`): the model and
the progress counters (enough to evaluate or to start a new run from, not to resume).

`save_checkpoint`, `export_best_model`, `resume` and `init_weights` are what `train.py` calls; the
file formats of the exported model (`best_model.safetensors` + its config) and of reference
releases belong to `trainer.model.weights`, which these functions use.
"""

from __future__ import annotations

import json
import random
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from accelerate.utils import gather_object

from packer.atomic import atomic_path
from trainer.model import CheckpointMismatch, load_reference_weights, save_model, state_dict_differences

if TYPE_CHECKING:
    from accelerate import Accelerator

    from trainer.data.loader import StreamingLoader
    from trainer.optim import Schedule
    from trainer.run_logs import SampleLog, StepLog

FORMAT = "flair-stream-train-ckpt"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit this run; the message names the file."""


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    micro_step: int = 0  # batches consumed (= step * gradient_accumulation_steps at step boundaries)
    best_value: float | None = None  # best monitored metric so far
    best_epoch: int | None = None
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Progress":
        return cls(**{k: state[k] for k in cls.__dataclass_fields__ if k in state})

    def improved(self, value: float, mode: str) -> bool:
        """Record `value` of the monitored metric; True when it beats the best so far."""
        better = self.best_value is None or (value > self.best_value if mode == "max" else value < self.best_value)
        if better:
            self.best_value, self.best_epoch, self.bad_evals = float(value), self.epoch, 0
        else:
            self.bad_evals += 1
        return better


# --------------------------------------------------------------------------------------------
# RNG state (plain types only, so it survives weights_only loading)
# --------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) generator states of this process."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _tuple_to_list(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_list_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple_to_list(x: Any) -> Any:
    return [_tuple_to_list(v) for v in x] if isinstance(x, (tuple, list)) else x


def _list_to_tuple(x: Any) -> Any:
    return tuple(_list_to_tuple(v) for v in x) if isinstance(x, list) else x


# --------------------------------------------------------------------------------------------
# Writing and reading
# --------------------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    with atomic_path(path, durable=True) as tmp:
        torch.save(obj, tmp)
    return path


def build_checkpoint(
    *,
    weights_only: bool,
    model_state: Mapping[str, torch.Tensor],
    progress: Progress,
    config_yaml: str,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: Any | None = None,
    scaler: Any | None = None,
    per_rank: list[Mapping[str, Any]] | None = None,
    world_size: int = 1,
) -> dict[str, Any]:
    """The checkpoint dict (plain types). `per_rank[r]` holds rank r's `rng` and `loader` states."""
    ckpt: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": "weights" if weights_only else "full",
        "model": {k: v.detach().to("cpu") for k, v in model_state.items()},
        "progress": progress.state_dict(), "config_yaml": config_yaml, "world_size": int(world_size),
    }
    if not weights_only:
        if optimizer is None or schedule is None or per_rank is None:
            raise ValueError("a full checkpoint needs the optimizer, the schedule and the per-rank states")
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["schedule"] = schedule.state_dict()
        ckpt["scaler"] = scaler.state_dict() if scaler is not None else None
        ckpt["per_rank"] = list(per_rank)
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of our training checkpoints; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc.__class__.__name__}: {exc})") from None
    except Exception as exc:  # weights_only refuses pickled objects with an UnpicklingError
        raise CheckpointError(f"{path}: not a plain-data checkpoint, refused ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a flair-stream training checkpoint (to start from reference or exported weights, "
            "use tasks.train_tasks.init_weights_only_from_ckpt)"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')} is not {VERSION}")
    return ckpt


def read_training_config(path: str | Path) -> str | None:
    """The config YAML stored in one of our training checkpoints (`best.ckpt`, `last.ckpt`), else None.

    Memory-mapped and weights-only: only the small entries are read, not the optimizer state.
    """
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file, pickled objects refused, unreadable: not ours
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or not isinstance(ckpt.get("config_yaml"), str):
        return None
    return ckpt["config_yaml"]


def check_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, shown: int = 10) -> None:
    """Raise `CheckpointError` naming the missing, unexpected and mis-shaped weights."""
    missing, unexpected, mis_shaped = state_dict_differences(model, state)
    shapes = sorted(f"{k}: {ours} vs {theirs}" for k, ours, theirs in mis_shaped)
    if missing or unexpected or shapes:
        parts = [f"{source}: incompatible with the model built from this config"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (ckpt vs model)", shapes)):
            if items:
                parts.append(f"{len(items)} {title}: " + ", ".join(items[:shown]) + (" ..." if len(items) > shown else ""))
        raise CheckpointError("; ".join(parts))


# --------------------------------------------------------------------------------------------
# What the training loop calls: save, resume, initial weights
# --------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, schedule: Schedule,
                    loader: StreamingLoader, progress: Progress, config_yaml: str, weights_only: bool,
                    best_eval: Mapping[str, Any] | None, logs: tuple[StepLog, SampleLog] | None = None) -> None:
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


def export_best_model(accelerator: Accelerator, model: torch.nn.Module, ckpt_dir: Path, config_yaml: str) -> None:
    """`best_model.safetensors` + `best_model.json`: the best weights with their model config and the
    run's config, all inference needs (`trainer.model.load_model`); rank 0 writes."""
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), ckpt_dir / "best_model", train_config_yaml=config_yaml)


def resume(path: str, accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, schedule: Schedule,
           loader: StreamingLoader, progress: Progress,
           logs: tuple[StepLog, SampleLog] | None = None) -> dict[str, Any] | None:
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
