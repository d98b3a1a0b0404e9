"""`train.reference_semantics: true`: the reference's training step, metric names and monitors.

flair-stream deviates from the FLAIR-HUB reference on purpose in a few places (docs/training.md,
"Deviations from the reference"). This switch turns every one of them back, for runs that must be
compared with the reference's numbers or its published checkpoints:

- training step (`tasks_module.py::SegmentationTask.step`): loss = sum over tasks of
  `task_weight * CrossEntropyLoss(weight=w)(logits, targets)`, auxiliary losses never added (the
  reference's lookup of them never matches), NaN when a batch has only weight-0 pixels
  (`trainer.losses.CompositeLoss(reference=True)`); modality dropout on whenever any configured
  probability is > 0, each branch then dropped with probability 1/2 (`random.uniform` then
  `torch.rand`); padded dates inside the L-TAE's input GroupNorm
  (`FlairUPerFuse.use_reference_semantics`);
- data: the last incomplete batch of each epoch dropped, in training and validation (the
  reference's `drop_last=True`): `data.uneven: drop`;
- schedule: `cycle_then_plateau` with the plateau patience the reference hard-codes (10);
- metrics, under the reference's names: `val_loss` = plain mean over validation batches of the
  step loss (torchmetrics `MeanMetric`), `val_miou_<T>` = support-weighted IoU over all classes
  (`MulticlassJaccardIndex(average="weighted")`), `val_miou` = its mean over tasks,
  `val_iou_<T>_<i>_<name>` (all classes, 0 when undefined), `val_loss_class_<T>_<i>_<name>`
  (unweighted cross-entropy per class, mean over batches, 0 where the class is absent),
  `train_loss` (epoch mean of batch losses), `train_miou_<T>` (weighted IoU of the training
  predictions), `lr`; predictions are `argmax(softmax(logits))`;
- monitors: `saving.ckpt_monitor` names one of those metrics (`val_miou` by default, the
  weighted IoU, as in the reference), with Lightning's ModelCheckpoint / EarlyStopping rules
  (strict improvement, `ckpt_earlystopping_patience` evaluations).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from trainer.metrics import ConfusionMatrix, compute_metrics, iou_per_class, task_class_names, task_class_weights, weighted_iou
from trainer.train_config import task_suffix

REFERENCE_CYCLE_PLATEAU_PATIENCE = 10
"""`tasks_module.py::configure_optimizers` hard-codes this patience for `cycle_then_plateau`."""


def enabled(cfg: Mapping[str, Any]) -> bool:
    return bool((cfg.get("train") or {}).get("reference_semantics"))


def prepare_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config with the reference's data and schedule rules (a copy; `cfg` is unchanged)."""
    out = copy.deepcopy(dict(cfg))
    out["data"]["uneven"] = "drop"
    if out["hyperparams"].get("scheduler") == "cycle_then_plateau":
        out["hyperparams"]["plateau_patience"] = REFERENCE_CYCLE_PLATEAU_PATIENCE
    return out


def dropout_on(cfg: Mapping[str, Any]) -> bool:
    """The reference switches modality dropout on when any configured value is > 0, active input or not."""
    return any((v or 0) > 0 for v in (cfg["modalities"].get("modality_dropout") or {}).values())


def class_label(cfg: Mapping[str, Any], task: str, index: int) -> str:
    """`value_name.get(i, f"class_{i}")`, as the reference names its per-class metrics."""
    return str(cfg["labels_configs"][task]["value_name"].get(index, f"class_{index}"))


def monitor_names(cfg: Mapping[str, Any]) -> list[str]:
    """Every metric these semantics log, i.e. what `saving.ckpt_monitor` may name."""
    names = ["val_loss", "val_miou", "train_loss", "lr"]
    for task in cfg["labels"]:
        s = task_suffix(task)
        names += [f"val_miou_{s}", f"train_miou_{s}"]
        for i in range(len(cfg["labels_configs"][task]["value_name"])):
            name = class_label(cfg, task, i)
            names += [f"val_iou_{s}_{i}_{name}", f"val_loss_class_{s}_{i}_{name}"]
    return names


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """`torch.argmax(torch.softmax(logits, dim=1), dim=1)`, the reference's predictions."""
    return torch.softmax(logits.float(), dim=1).argmax(dim=1)


class TrainMetrics:
    """`train_miou_<T>`: weighted IoU of the epoch's training predictions (torchmetrics, summed over ranks)."""

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str) -> None:
        self.tasks = list(cfg["labels"])
        self.device = device
        self.cms = {t: ConfusionMatrix(len(cfg["labels_configs"][t]["value_name"]), device) for t in self.tasks}

    @torch.no_grad()
    def update(self, task_logits: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        keep = batch["valid"].bool()
        for t in self.tasks:
            self.cms[t].update(predictions(task_logits[t].detach())[keep], batch[t][keep])

    def epoch_scalars(self, accelerator: Any) -> dict[str, float]:
        out = {}
        for t in self.tasks:
            self.cms[t].all_reduce(accelerator)
            out[f"train_miou_{task_suffix(t)}"] = weighted_iou(self.cms[t].numpy())
            self.cms[t].reset()
        return out


class Validation:
    """The reference's validation epoch (`validation_step` + `on_validation_epoch_end`), batch by batch."""

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str) -> None:
        self.cfg = cfg
        self.tasks = list(cfg["labels"])
        self.device = device
        self.n_classes = {t: len(cfg["labels_configs"][t]["value_name"]) for t in self.tasks}
        self.cms = {t: ConfusionMatrix(self.n_classes[t], device) for t in self.tasks}
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.batches = torch.zeros((), dtype=torch.float64, device=device)
        self.class_loss_sum = {t: torch.zeros(self.n_classes[t], dtype=torch.float64, device=device) for t in self.tasks}

    @torch.no_grad()
    def update(self, loss: torch.Tensor, task_logits: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """One validation batch: its step loss and logits, and the batch's class-index targets."""
        self.loss_sum += loss.detach().double()
        self.batches += 1
        for t in self.tasks:
            logits, targets = task_logits[t].float(), batch[t].long()
            self.cms[t].update(predictions(logits), targets)
            per_pixel = F.cross_entropy(logits, targets, reduction="none")
            for c in range(self.n_classes[t]):
                here = targets == c
                if bool(here.any()):
                    self.class_loss_sum[t][c] += per_pixel[here].mean().double()

    def reduce(self, accelerator: Any) -> None:
        if accelerator is not None and getattr(accelerator, "num_processes", 1) > 1:
            self.loss_sum = accelerator.reduce(self.loss_sum, reduction="sum")
            self.batches = accelerator.reduce(self.batches, reduction="sum")
            self.class_loss_sum = {t: accelerator.reduce(v, reduction="sum") for t, v in self.class_loss_sum.items()}
        for cm in self.cms.values():
            cm.all_reduce(accelerator)

    def scalars(self) -> dict[str, float]:
        """The reference's logged values, under its names."""
        n = float(self.batches)
        out: dict[str, float] = {"val_loss": float(self.loss_sum) / n if n else float("nan")}
        per_task = {t: weighted_iou(self.cms[t].numpy()) for t in self.tasks}
        out["val_miou"] = sum(per_task.values()) / len(self.tasks)
        for t in self.tasks:
            s = task_suffix(t)
            out[f"val_miou_{s}"] = per_task[t]
            for c, iou in enumerate(iou_per_class(self.cms[t].numpy())):
                out[f"val_iou_{s}_{c}_{class_label(self.cfg, t, c)}"] = float(iou)
            for c in range(self.n_classes[t]):
                out[f"val_loss_class_{s}_{c}_{class_label(self.cfg, t, c)}"] = float(self.class_loss_sum[t][c]) / n if n else 0.0
        return out

    def metrics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Our per-task metrics of the same matrices (for the report and the best checkpoint)."""
        confmats = {t: self.cms[t].matrix.cpu() for t in self.tasks}
        metrics = {t: compute_metrics(self.cms[t], task_class_weights(self.cfg, t), task_class_names(self.cfg, t))
                   for t in self.tasks}
        return metrics, confmats


@torch.no_grad()
def evaluate(cfg: Mapping[str, Any], accelerator: Any, model: torch.nn.Module, loss_fn: Any, loader: Any,
             batches: Callable[[Any], Iterable[Any]], forward: Callable[..., Any], series: tuple[str, ...],
             limit: int | None) -> dict[str, Any]:
    """The reference's validation pass: same return layout as `trainer.train.evaluate`.

    `batches(loader)` iterates the loader; `forward(model, inputs, series)` calls the model.
    Batches are all full under these semantics (`data.uneven: drop`).
    """
    model.eval()
    val = Validation(cfg, accelerator.device)
    loader.set_epoch(0)
    for i, batch in enumerate(batches(loader)):
        if limit is not None and i >= limit:
            break
        inputs = loader.to_model_inputs(batch, accelerator.device)
        with accelerator.autocast():
            out = forward(model, inputs, series)
        terms = loss_fn(out.tasks, out.aux, inputs, check_finite=False)
        val.update(terms.total, out.tasks, inputs)
    val.reduce(accelerator)
    metrics, confmats = val.metrics()
    return {"scalars": val.scalars(), "metrics": metrics, "confmats": confmats}


def log_to_tensorboard(writer: Any, row: Mapping[str, float], step: int) -> None:
    """Every logged value under the reference's own tag (`val_miou`, `val_iou_COSIA_3_...`), as Lightning writes them."""
    for key, value in row.items():
        if key not in ("epoch", "step"):
            writer.add_scalar(key, value, step)
