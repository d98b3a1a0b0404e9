"""Segmentation metrics from a confusion matrix, with the FLAIR-HUB reference's conventions.

Every rank accumulates its own `ConfusionMatrix` (rows = ground truth, columns = prediction) and
the matrices are summed across ranks once per evaluation (`all_reduce`), so metrics are exact over
the whole split whatever the world size. `compute_metrics` then follows the reference's
`writer/metrics_utils.py`: classes whose loss weight is 0 (CoSIA 15-18) are removed from the matrix
(rows and columns) before per-class IoU, mIoU, overall accuracy, precision, recall and F1 are
computed; an IoU with an empty denominator counts as 0, as in the reference. It also returns the
support-weighted IoU over all classes, which is what the reference's Lightning module logs as
`val_miou` (torchmetrics `MulticlassJaccardIndex(average="weighted")`).

Values are fractions in [0, 1]; the report prints them as percentages.

Used by the trainer and by inference (`from trainer.metrics import ConfusionMatrix, compute_metrics`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "compute_metrics", "iou_per_class", "task_class_names", "task_class_weights",
           "metrics_for_task", "weighted_iou"]


class ConfusionMatrix:
    """A running `n_classes x n_classes` count matrix (rows: target, columns: prediction).

    Targets outside `[0, n_classes)` (e.g. an ignore value of 255) are skipped; predictions are
    class indices (take the argmax of the logits first).
    """

    def __init__(self, n_classes: int, device: torch.device | str | None = None) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = int(n_classes)
        self.matrix = torch.zeros(self.n_classes, self.n_classes, dtype=torch.int64, device=device)

    def update(self, preds: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> "ConfusionMatrix":
        """Add the pixels of a batch: `preds` and `targets` hold class indices of the same shape."""
        preds = torch.as_tensor(preds)
        targets = torch.as_tensor(targets)
        if preds.shape != targets.shape:
            raise ValueError(f"preds shape {tuple(preds.shape)} != targets shape {tuple(targets.shape)}")
        preds = preds.reshape(-1).to(device=self.matrix.device, dtype=torch.int64)
        targets = targets.reshape(-1).to(device=self.matrix.device, dtype=torch.int64)
        n = self.n_classes
        keep = (targets >= 0) & (targets < n)
        if (preds[keep] < 0).any() or (preds[keep] >= n).any():
            raise ValueError(f"a prediction is outside [0, {n})")
        counts = torch.bincount(targets[keep] * n + preds[keep], minlength=n * n)
        self.matrix += counts.reshape(n, n)
        return self

    def all_reduce(self, accelerator: Any | None) -> "ConfusionMatrix":
        """Sum the matrices of all ranks in place (a no-op for one process or `accelerator=None`)."""
        if accelerator is None or getattr(accelerator, "num_processes", 1) == 1:
            return self
        # NCCL reduces only device tensors; gloo works with CPU ones, which is where the device is then.
        local = self.matrix.to(accelerator.device)
        self.matrix = accelerator.reduce(local, reduction="sum").to(self.matrix.device)
        return self

    def reset(self) -> None:
        self.matrix.zero_()

    def numpy(self) -> np.ndarray:
        return self.matrix.detach().cpu().numpy()

    @property
    def total(self) -> int:
        return int(self.matrix.sum())


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (the reference turns these NaNs into 0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def iou_per_class(confmat: np.ndarray) -> np.ndarray:
    """IoU of every class of a full confusion matrix, 0 where a class is neither true nor predicted.

    torchmetrics' `MulticlassJaccardIndex(average=None)` followed by `nan_to_num`, as the
    reference's Lightning module logs `val_iou_<TASK>_<i>_<name>`.
    """
    cm = np.asarray(confmat, dtype=np.float64)
    tp = np.diag(cm)
    return _safe_ratio(tp, cm.sum(axis=1) + cm.sum(axis=0) - tp)


def weighted_iou(confmat: np.ndarray) -> float:
    """Support-weighted IoU over every class: torchmetrics' `MulticlassJaccardIndex(average="weighted")`,
    which the reference's Lightning module logs as `val_miou_<TASK>` (and averages over tasks as `val_miou`)."""
    cm = np.asarray(confmat, dtype=np.float64)
    support = cm.sum(axis=1)
    return float((iou_per_class(cm) * support).sum() / support.sum()) if support.sum() > 0 else 0.0


def compute_metrics(
    confmat: np.ndarray | torch.Tensor | ConfusionMatrix,
    class_weights: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of one task from its confusion matrix.

    `class_weights` are the task's loss weights (`default` with `default_exceptions` applied); a
    class with weight 0 is left out of every averaged metric and of OA, as in the reference.
    Returns a JSON-friendly dict:
    `miou`, `oa`, `wiou`, `mf1`, `mprecision`, `mrecall` (floats), `n_pixels` (evaluated pixels),
    `evaluated` (class indices kept) and `per_class` (one dict per class, in class order, with
    `index, name, weight, evaluated, support, iou, precision, recall, f1`; the four scores are None
    for classes that are not evaluated).
    """
    if isinstance(confmat, ConfusionMatrix):
        confmat = confmat.numpy()
    cm = np.asarray(confmat.detach().cpu() if isinstance(confmat, torch.Tensor) else confmat, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    weights = [1.0] * n if class_weights is None else [float(w) for w in class_weights]
    names = [f"class_{i}" for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(weights) != n or len(names) != n:
        raise ValueError(f"{n} classes but {len(weights)} weights and {len(names)} names")

    used = np.array([i for i, w in enumerate(weights) if w != 0], dtype=np.int64)
    sub = cm[np.ix_(used, used)]
    tp = np.diag(sub)
    gt = sub.sum(axis=1)
    pred = sub.sum(axis=0)
    iou = _safe_ratio(tp, gt + pred - tp)
    precision = _safe_ratio(tp, pred)
    recall = _safe_ratio(tp, gt)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    total = sub.sum()

    wiou = weighted_iou(cm)

    pos = {int(c): k for k, c in enumerate(used)}
    per_class = []
    for i in range(n):
        k = pos.get(i)
        per_class.append({
            "index": i, "name": names[i], "weight": weights[i], "evaluated": k is not None,
            "support": int(cm[i].sum()),
            "iou": None if k is None else float(iou[k]),
            "precision": None if k is None else float(precision[k]),
            "recall": None if k is None else float(recall[k]),
            "f1": None if k is None else float(f1[k]),
        })
    mean = (lambda a: float(a.mean()) if a.size else 0.0)
    return {
        "miou": mean(iou), "oa": float(tp.sum() / total) if total > 0 else 0.0, "wiou": wiou,
        "mf1": mean(f1), "mprecision": mean(precision), "mrecall": mean(recall),
        "n_pixels": int(total), "evaluated": [int(c) for c in used], "per_class": per_class,
    }


# --------------------------------------------------------------------------------------------
# Config helpers: the class table and weights of a task, from the reference's supervision keys
# --------------------------------------------------------------------------------------------
def task_class_names(cfg: Mapping[str, Any], task: str) -> list[str]:
    """Class names of `task` in index order (`labels_configs.<task>.value_name`)."""
    names = cfg["labels_configs"][task]["value_name"]
    return [str(names[i]) for i in range(len(names))]


def task_class_weights(cfg: Mapping[str, Any], task: str, modality: str | None = None) -> list[float]:
    """Per-class loss weights of `task`: `default`, then `default_exceptions`, then (for an
    auxiliary head of `modality`) `per_modality_exceptions.<modality>` on top.

    Missing `value_weights` mean weight 1 everywhere (the reference would raise a KeyError).
    """
    conf = cfg["labels_configs"][task]
    n = len(conf["value_name"])
    vw = conf.get("value_weights") or {}
    weights = [float(vw.get("default", 1))] * n
    layers = [vw.get("default_exceptions") or {}]
    if modality is not None:
        layers.append((vw.get("per_modality_exceptions") or {}).get(modality) or {})
    for layer in layers:
        for cls, w in layer.items():
            if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < n:
                raise ValueError(f"labels_configs.{task}.value_weights: class {cls!r} is not in 0..{n - 1}")
            weights[cls] = float(w)
    return weights


def metrics_for_task(confmat: np.ndarray | torch.Tensor | ConfusionMatrix, cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    """`compute_metrics` with the task's names and default weights taken from the config."""
    return compute_metrics(confmat, task_class_weights(cfg, task), task_class_names(cfg, task))
