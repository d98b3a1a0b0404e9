"""End-of-run report: what a person reads after training, in `<out>/report/`.

- `report.md`: the summary (monitored metric, epochs, steps, throughput) and per task a table
  of per-class IoU / precision / recall / F1 / support, with the averages;
- `metrics.json`: the same numbers, machine-readable;
- `<TASK>_confusion.png`: the confusion matrix, rows normalised to recall;
- `<TASK>_iou.png`: per-class IoU bar chart in the official class colours;
- `<TASK>_confusion.npy`: the raw counts (int64, no pickle);
- `config_used.yaml`: the exact configuration of the run.
Every file is written to a temporary name, then renamed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from packer.atomic import write_bytes_atomic
from packer.schema import official_classes


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def class_table_markdown(task: str, metrics: Mapping[str, Any]) -> str:
    """Per-class table of one task (percentages); classes with weight 0 are listed as not evaluated."""
    lines = [
        f"### {task}", "",
        f"mIoU **{_pct(metrics['miou'])}** over {len(metrics['evaluated'])} classes · OA {_pct(metrics['oa'])} · "
        f"weighted IoU {_pct(metrics['wiou'])} · mean F1 {_pct(metrics['mf1'])} · {metrics['n_pixels']:,} pixels", "",
        "| # | class | IoU | precision | recall | F1 | support (px) | weight |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in metrics["per_class"]:
        name = c["name"] if c["evaluated"] else f"{c['name']} (not evaluated)"
        lines.append(f"| {c['index']} | {name} | {_pct(c['iou'])} | {_pct(c['precision'])} | {_pct(c['recall'])} | "
                     f"{_pct(c['f1'])} | {c['support']:,} | {c['weight']:g} |")
    return "\n".join(lines) + "\n"


def _colours(task: str, n: int) -> list[str]:
    table = official_classes(task, n)
    if table is not None:
        return [c.color for c in table]
    return ["#4c72b0"] * n


def confusion_figure(task: str, confmat: np.ndarray, names: list[str]) -> Any:
    """The confusion matrix, rows normalised to recall, as a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    cm = confmat.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    size = max(5.0, 0.45 * n + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{task}: confusion matrix (rows normalised)")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def iou_figure(task: str, metrics: Mapping[str, Any]) -> Any:
    """Per-class IoU bars in the official class colours, as a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    rows = [c for c in metrics["per_class"] if c["evaluated"]]
    colours = _colours(task, len(metrics["per_class"]))
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.5))
    ax = fig.subplots()
    x = np.arange(len(rows))
    # The grey outline keeps white (snow) and black classes visible on a white background.
    ax.bar(x, [100 * c["iou"] for c in rows], color=[colours[c["index"]] for c in rows], edgecolor="#555555")
    ax.axhline(100 * metrics["miou"], color="black", linestyle="--", linewidth=1, label=f"mIoU {100 * metrics['miou']:.1f}")
    ax.set_xticks(x, [c["name"] for c in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{task}: per-class IoU")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def _save_png(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    write_bytes_atomic(path, buf.getvalue())


def plot_confusion(task: str, confmat: np.ndarray, names: list[str], path: Path) -> None:
    _save_png(confusion_figure(task, confmat, names), path)


def plot_iou(task: str, metrics: Mapping[str, Any], path: Path) -> None:
    _save_png(iou_figure(task, metrics), path)


def write_report(
    out_dir: str | Path,
    task_metrics: Mapping[str, Mapping[str, Any]],
    confmats: Mapping[str, np.ndarray],
    config_yaml: str,
    summary: Mapping[str, Any],
) -> Path:
    """Write the report folder (see the module docstring); returns its path."""
    folder = Path(out_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    head = ["# Training report", ""]
    for key, value in summary.items():
        head.append(f"- **{key}**: {value:.4f}" if isinstance(value, float) else f"- **{key}**: {value}")
    body = ["\n".join(head), ""]
    for task, metrics in task_metrics.items():
        names = [c["name"] for c in metrics["per_class"]]
        stem = task.replace("/", "_")
        cm = np.asarray(confmats[task], dtype=np.int64)
        buf = io.BytesIO()
        np.save(buf, cm, allow_pickle=False)
        write_bytes_atomic(folder / f"{stem}_confusion.npy", buf.getvalue())
        plot_confusion(task, cm, names, folder / f"{stem}_confusion.png")
        plot_iou(task, metrics, folder / f"{stem}_iou.png")
        body.append(class_table_markdown(task, metrics))
        body.append(f"![confusion matrix]({stem}_confusion.png)\n\n![per-class IoU]({stem}_iou.png)\n")
    write_bytes_atomic(folder / "report.md", "\n".join(body).encode("utf-8"))
    doc = {"summary": dict(summary), "tasks": {t: dict(m) for t, m in task_metrics.items()}}
    write_bytes_atomic(folder / "metrics.json", json.dumps(doc, indent=2, default=float).encode("utf-8"))
    write_bytes_atomic(folder / "config_used.yaml", config_yaml.encode("utf-8"))
    return folder
