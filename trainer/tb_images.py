"""Pictures in TensorBoard at each validation: a few fixed patches, the confusion matrix, per-class IoU.

`EvalImages` picks the first `n` samples of the validation selection once (index order, so the
same patches at every validation and on every resume), keeps their raw arrays for display and
their preprocessed batch for the model, and at each validation logs:

- `val_samples`: one row per patch, the input RGB (aerial, else SPOT, else the clearest
  Sentinel-2 date: `packer.plot.preview_rgb`), then per task the label and the prediction, in the
  official class colours, with a legend of the classes shown;
- `val_confusion/<TASK>` and `val_iou/<TASK>`: the report's figures (`trainer.report`) for this
  validation's confusion matrix and metrics.

It runs on the main process only, on the unwrapped model (no DDP collective), under no_grad.
Figures are rendered with matplotlib's Agg canvas and logged as images, so no pyplot state or
backend is touched.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

from packer.plot import FALLBACK_COLOR, class_colors, preview_rgb
from packer.schema import official_classes
from trainer.data.collate import collate
from trainer.data.sample import preprocess_sample
from trainer.report import confusion_figure, iou_figure
from trainer.train_config import task_suffix


def figure_to_rgb(fig: Any) -> np.ndarray:
    """(H, W, 3) uint8 rendering of a matplotlib Figure (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def task_colors(task: str, n_classes: int) -> np.ndarray:
    """(n, 3) uint8: the official table when the task's classes are that table (CoSIA, LPIS level 1);
    a distinct palette otherwise (LPIS levels 2 and 3 have no official colours in the schema)."""
    if official_classes(task, n_classes) is not None:
        return class_colors(task, 256)
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    lut = np.tile(np.array([int(FALLBACK_COLOR[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8), (256, 1))
    for i in range(n_classes):
        lut[i] = (np.array(cmap(i % 20)[:3]) * 255).astype(np.uint8)
    return lut


class EvalImages:
    """The validation pictures of one run (see the module docstring)."""

    def __init__(self, loader: Any, cfg: Mapping[str, Any], n: int = 4) -> None:
        self.loader = loader
        self.tasks = list(cfg["labels"])
        self.names = {t: [str(cfg["labels_configs"][t]["value_name"][i])
                          for i in range(len(cfg["labels_configs"][t]["value_name"]))] for t in self.tasks}
        reader = loader.dataset.reader
        count = min(n, len(loader.selection))
        self.raw = [reader.read(i) for i in range(count)]
        samples = [preprocess_sample(r, loader.spec, loader.seed, 0) for r in self.raw]
        self.batch = collate(samples, loader.spec) if samples else None

    @torch.no_grad()
    def predictions(self, model: torch.nn.Module, predict: Callable[[torch.nn.Module, Mapping[str, Any]], Any],
                    device: torch.device) -> dict[str, np.ndarray]:
        """Task -> (n, H, W) predicted classes of the fixed patches."""
        inputs = self.loader.to_model_inputs(self.batch, device)
        out = predict(model, inputs)
        return {t: out.tasks[t].argmax(dim=1).cpu().numpy() for t in self.tasks}

    def samples_figure(self, predicted: Mapping[str, np.ndarray], step: int) -> Any:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        rows, cols = len(self.raw), 1 + 2 * len(self.tasks)
        fig = Figure(figsize=(2.6 * cols + 2.6 * len(self.tasks), 2.7 * rows + 0.5), dpi=80, layout="constrained")
        fig.suptitle(f"validation patches at step {step}", fontsize=11)
        grid = fig.add_gridspec(rows, cols + len(self.tasks))
        for r, raw in enumerate(self.raw):
            ax = fig.add_subplot(grid[r, 0])
            rgb = preview_rgb(raw)
            if rgb is not None:
                ax.imshow(rgb, interpolation="nearest")
            ax.set_title(raw["patch_id"], fontsize=8)
            ax.set_ylabel("input RGB", fontsize=8)
            _bare(ax)
            for k, task in enumerate(self.tasks):
                lut = task_colors(task, len(self.names[task]))
                label = self.batch[task][r].numpy()
                for c, (what, classes) in enumerate((("label", label), ("prediction", predicted[task][r]))):
                    ax = fig.add_subplot(grid[r, 1 + 2 * k + c])
                    ax.imshow(lut[np.clip(classes, 0, 255).astype(np.uint8)], interpolation="nearest")
                    ax.set_title(f"{task_suffix(task)} {what}", fontsize=8)
                    _bare(ax)
        for k, task in enumerate(self.tasks):
            lut = task_colors(task, len(self.names[task]))
            shown = np.union1d(np.unique(self.batch[task].numpy()), np.unique(predicted[task]))
            handles = [Patch(facecolor=lut[int(v)] / 255.0, edgecolor="#555555", linewidth=0.5,
                             label=f"{int(v)} {self.names[task][int(v)] if int(v) < len(self.names[task]) else '?'}")
                       for v in shown]
            leg = fig.add_subplot(grid[:, cols + k])
            leg.set_axis_off()
            leg.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, title=task_suffix(task),
                       title_fontsize=8, handlelength=1.0, borderaxespad=0)
        return fig

    def log(self, writer: Any, model: torch.nn.Module, predict: Callable, device: torch.device,
            evaluation: Mapping[str, Any], step: int) -> None:
        """Log the three kinds of pictures for one validation."""
        if self.batch is not None:
            predicted = self.predictions(model, predict, device)
            writer.add_image("val_samples", figure_to_rgb(self.samples_figure(predicted, step)), step, dataformats="HWC")
        for task in self.tasks:
            cm = np.asarray(evaluation["confmats"][task])
            writer.add_image(f"val_confusion/{task_suffix(task)}",
                             figure_to_rgb(confusion_figure(task, cm, self.names[task])), step, dataformats="HWC")
            writer.add_image(f"val_iou/{task_suffix(task)}",
                             figure_to_rgb(iou_figure(task, evaluation["metrics"][task])), step, dataformats="HWC")


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
