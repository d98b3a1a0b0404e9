"""`flair-infer`: predict a split of packed shards, patch by patch, and score it when labels exist.

The split is streamed with the training loader (`trainer.data.prediction_loader`: any
source it supports, the same preprocessing), batched, on CPU or GPU; under `accelerate launch`
each rank predicts its share and the confusion matrices are summed across ranks. Per patch and
task one single-band uint8 GeoTIFF is written (or one band per class with `--output class_prob`),
georeferenced from the index (CRS and bounds of the patch), compressed, with the class colour
table and names (see `inference.writers`). With labels: confusion matrix, per-class IoU, mIoU
over the weighted classes, OA (`trainer.metrics`) as CSV, JSON and PNG, printed as a table.

Configuration: the preprocessing (channels, normalisation statistics, filters) comes from
`--config` when given; else from the training config that `flair-train` stores in its checkpoints
(`train_config_yaml` in the checkpoint's JSON); else, for checkpoints saved without one, from the
shipped FLAIR-HUB defaults (`configs/flair-hub/`) with a warning. A reference checkpoint needs
`--config`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine

from inference.model_io import check_model_covers, load_inference_model, our_checkpoint_config, predict_logits
from inference.writers import map_colors, probabilities_u8, write_raster
from packer.atomic import write_text_atomic
from packer.schema import CLASS_TABLES, MODALITIES, PatchId
from trainer import (
    ConfigError, ConfusionMatrix, builtin_config, class_table_markdown, deep_merge, metrics_for_task, plot_confusion,
    plot_iou, read_config_layers, task_class_names, validate_config,
)
from trainer.data import (
    Catalog, SampleSpec, StreamingLoader, labelled_split, open_source, prediction_loader,
)

log = logging.getLogger("flair.infer")

DEFAULT_CONFIG_DIR = builtin_config("flair-hub")
"""The reference defaults shipped with the package (a clone's configs/flair-hub, or the wheel's copy)."""


@dataclass
class InferOptions:
    checkpoint: str | None
    data: str
    out: str | None
    split: str = "test"
    config: Sequence[str] | None = None
    output: str = "argmax"  # or class_prob
    batch_size: int = 4
    num_workers: int = 0
    device: str | None = None
    compression: str = "lzw"
    write: bool = True
    limit: int | None = None
    progress: bool = True
    print_table: bool = True  # print the per-class table of each task at the end
    metrics_only: bool = False  # score the prediction files under `pred` instead of predicting
    pred: str | None = None  # folder of a predicting run (`<pred>/predictions/<TASK>/`); default `out`


@dataclass
class InferResult:
    n_patches: int = 0
    files: int = 0
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    confmats: dict[str, np.ndarray] = field(default_factory=dict)
    read_s: float = 0.0
    model_s: float = 0.0
    write_s: float = 0.0
    loop_s: float = 0.0  # the prediction loop alone (total_s also counts model loading and set-up)
    total_s: float = 0.0
    device: str = "cpu"
    params: int = 0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
def _int_keys(names: Mapping[Any, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in names.items()}


def model_overlay(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a checkpoint's model config that decide what the loader must produce."""
    mods = model_cfg.get("modalities", {})
    overlay: dict[str, Any] = {
        "modalities": {k: mods[k] for k in ("inputs", "inputs_channels", "pre_processings") if k in mods},
        "models": model_cfg.get("models", {}),
        "labels": list(model_cfg.get("labels") or []),
        "labels_configs": {t: {"value_name": _int_keys(c["value_name"])}
                           for t, c in (model_cfg.get("labels_configs") or {}).items()},
    }
    return overlay


def infer_config(opts: InferOptions, ckpt_doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated loader config for this run (see the module docstring for where keys come from)."""
    if opts.config:
        raw = read_config_layers(list(opts.config))
    elif ckpt_doc is not None and ckpt_doc.get("train_config_yaml"):
        # Written by flair-train: the exact preprocessing the model was trained with.
        raw = yaml.safe_load(ckpt_doc["train_config_yaml"])
        raw.pop("train", None)  # the training loop's own section; not a loader key
        log.info("preprocessing from the training config stored with %s", opts.checkpoint)
    elif ckpt_doc is not None and "config" in ckpt_doc:
        log.warning("no --config: normalisation and preprocessing statistics are the FLAIR-HUB defaults "
                    "(%s); pass the training config if the model was trained with others", DEFAULT_CONFIG_DIR)
        raw = read_config_layers([DEFAULT_CONFIG_DIR])
        overlay = model_overlay(ckpt_doc["config"])
        for t in overlay["labels_configs"]:  # keep the default weights, take the checkpoint's class names
            raw.setdefault("labels_configs", {}).setdefault(t, {})["value_name"] = {}
        models = overlay.pop("models")
        raw = deep_merge(raw, overlay)
        raw["models"] = models  # the architecture is the checkpoint's, whole
    else:
        raise ConfigError(f"--config: {opts.checkpoint} is not one of our checkpoints (no model config with it); "
                          "give the training config it was trained with")
    raw.setdefault("data", {})["source"] = opts.data
    cfg = validate_config(raw)
    if ckpt_doc is not None:
        check_model_covers({m for m, on in cfg["modalities"]["inputs"].items() if on}, cfg["labels"],
                           ckpt_doc["config"], opts.checkpoint)
    return cfg


# --------------------------------------------------------------------------------------------
# Georeferencing from the index
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchGeo:
    crs: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float

    def transform(self, size: int) -> Affine:
        """The label's affine: origin at the upper-left corner, square pixels.

        The pixel size is rounded to 1e-9 map units: bounds in Lambert-93 metres carry float
        noise (700102.4 - 700000.0 != 102.4), and the label grids have exact decimal steps.
        """
        res = round((self.xmax - self.xmin) / size, 9)
        return Affine(res, 0.0, self.xmin, 0.0, -res, self.ymax)


def patch_geo(catalog: Catalog, patch_ids: Sequence[str]) -> dict[str, PatchGeo]:
    t = catalog.table
    wanted = set(patch_ids)
    cols = {c: t.column(c).to_pylist() for c in ("patch_id", "crs", "xmin", "ymin", "xmax", "ymax")}
    out = {}
    for i, pid in enumerate(cols["patch_id"]):
        if pid in wanted:
            out[pid] = PatchGeo(cols["crs"][i], cols["xmin"][i], cols["ymin"][i], cols["xmax"][i], cols["ymax"][i])
    return out


def prediction_path(out: Path, task: str, patch_id: str, kind: str) -> Path:
    """`<out>/predictions/<TASK>/PRED_<label file name>` (the reference's naming), `_prob` for probabilities."""
    name = PatchId.parse(patch_id).file_name(task)
    if kind != "argmax":
        name = name.replace(".tif", "_prob.tif")
    return out / "predictions" / task / f"PRED_{name}"


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def _accelerator(device: str | None) -> Any:
    if device is not None:
        return None
    from accelerate import Accelerator

    return Accelerator()


def run_tasks(opts: InferOptions, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the reference's `tasks` keys of an explicit `--config` ask of this run.

    `metrics_only` (with `predict: False`, the reference's rule) scores existing predictions;
    `write_files: False` writes no GeoTIFF (as `--no-write`); `georeferencing_output: False`
    writes the maps without CRS and transform, as the reference does. The training config
    stored in a checkpoint describes its training run, not this one: its `tasks` are not read.
    """
    tasks = (cfg.get("tasks") or {}) if opts.config else {}
    metrics_only = opts.metrics_only or bool(tasks.get("metrics_only") and not tasks.get("predict", True))
    if not metrics_only and tasks.get("predict") is False:
        raise ConfigError("tasks.predict: False and tasks.metrics_only: False leave flair-infer nothing to do; set "
                          "tasks.predict: True to predict, or tasks.metrics_only: True (or --metrics-only --pred DIR) "
                          "to score existing predictions")
    return {"metrics_only": metrics_only, "write": opts.write and tasks.get("write_files", True) is not False,
            "georeferenced": tasks.get("georeferencing_output", True) is not False}


def run_infer(opts: InferOptions, model: Any = None) -> InferResult:
    """Predict `opts.split` of `opts.data`; `model` (forward contract of `trainer.model`) replaces loading one.

    In metrics-only mode (`opts.metrics_only` or the config's `tasks`), score the prediction files
    of an earlier run instead (`score_predictions`).
    """
    t_start = time.perf_counter()
    if opts.output not in ("argmax", "class_prob"):
        raise ValueError(f"--output must be argmax or class_prob, got {opts.output!r}")
    if opts.metrics_only:
        return score_predictions(opts)
    if model is None and not opts.checkpoint:
        if opts.config and run_tasks(opts, read_config_layers(list(opts.config)))["metrics_only"]:
            return score_predictions(opts)
        raise ConfigError("--checkpoint: missing (or --metrics-only --pred DIR to score existing predictions)")
    acc = _accelerator(opts.device)
    device = torch.device(opts.device) if opts.device is not None else acc.device
    cfg = _run_config(opts, model)
    todo = run_tasks(opts, cfg)
    if todo["metrics_only"]:
        return score_predictions(opts)
    if opts.out is None:
        raise ConfigError("--out: missing (the folder for predictions and metrics)")
    run = _start_run(opts, cfg, todo, model, acc, device)
    result = InferResult(device=str(device), params=_parameter_count(run.model))
    _predict_split(run, result)
    if run.scored:
        _score(run, result)
    result.total_s = time.perf_counter() - t_start
    if run.main:
        log.info("%d patches, %d files in %.1f s (read %.1f s, model %.1f s, write %.1f s)", result.n_patches,
                 result.files, result.total_s, result.read_s, result.model_s, result.write_s)
    return result


@dataclass
class _PredictionRun:
    """What a prediction run holds from its start to its metrics: the model, the loader of this
    rank's share of the split, and per task its class names, colours and confusion matrix."""

    opts: InferOptions
    cfg: dict[str, Any]
    todo: dict[str, Any]
    acc: Any
    device: torch.device
    main: bool
    model: Any
    loader: Any
    scored: bool
    tasks: list[str]
    geo: dict[str, PatchGeo]
    names: dict[str, list[str]]
    colors: dict[str, Any]
    confmats: dict[str, ConfusionMatrix]


def _run_config(opts: InferOptions, model: Any) -> dict[str, Any]:
    """The merged config the run predicts with (`infer_config`), or a ConfigError saying what is missing."""
    ckpt_doc = our_checkpoint_config(opts.checkpoint) if model is None else None
    if model is None and ckpt_doc is None and not opts.config:
        raise ConfigError(f"--config: {opts.checkpoint} is not one of our checkpoints; a reference checkpoint "
                          "needs the training config it was trained with")
    cfg = infer_config(opts, ckpt_doc) if (opts.config or ckpt_doc is not None) else None
    if cfg is None:
        raise ConfigError("--config: needed to know the preprocessing when a model object is passed")
    return cfg


def _start_run(opts: InferOptions, cfg: dict[str, Any], todo: dict[str, Any], model: Any, acc: Any,
               device: torch.device) -> _PredictionRun:
    """Load the model (unless given), open this rank's loader, and set up each task's outputs."""
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    if model is None:
        model, _ = load_inference_model(opts.checkpoint, cfg, device=device)
    model.eval()
    tasks = list(cfg["labels"])
    loader, scored = prediction_loader(cfg, opts.data, opts.split, batch_size=opts.batch_size,
                                       num_workers=opts.num_workers, rank=rank, world_size=world, limit=opts.limit,
                                       pin_memory=device.type == "cuda")
    if not scored:
        log.warning("split %r has no labels for %s: predictions only, no metrics", opts.split, tasks)
    channels = {t: int(cfg["labels_configs"][t].get("label_channel_nomenclature", 1)) for t in tasks}
    names = {t: task_class_names(cfg, t) for t in tasks}
    run = _PredictionRun(
        opts, cfg, todo, acc, device, rank == 0, model, loader, scored, tasks,
        geo=patch_geo(loader.catalog, loader.selection.patch_ids), names=names,
        colors={t: map_colors(t, len(names[t]), channels[t]) for t in tasks},
        confmats={t: ConfusionMatrix(len(names[t]), device=device) for t in tasks})
    if run.main:
        log.info("%d patches of split %r from %s on %s x %d; tasks %s; output %s",
                 len(loader.selection), opts.split, opts.data, device, world, tasks, opts.output)
    return run


def _parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0


def _predict_split(run: _PredictionRun, result: InferResult) -> None:
    """Every batch of the rank's share: predict, count into the confusion matrices, write the files."""
    from tqdm import tqdm

    opts, tasks, device = run.opts, run.tasks, run.device
    out_size = MODALITIES[tasks[0]].size_px
    bar = tqdm(total=len(run.loader), unit="batch", desc="flair-infer", disable=not (opts.progress and run.main))
    t_loop = time.perf_counter()
    it = iter(run.loader)
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        result.read_s += time.perf_counter() - t0
        if batch is None:
            break
        t1 = time.perf_counter()
        inputs = run.loader.to_model_inputs(batch, device)
        logits = predict_logits(run.model, inputs, run.loader.spec.series, out_size, tasks)
        valid = inputs["valid"]
        preds = {t: logits[t].argmax(dim=1) for t in tasks}
        if run.scored:
            for t in tasks:
                run.confmats[t].update(preds[t][valid], inputs[t][valid])
        if device.type == "cuda":
            torch.cuda.synchronize()
        result.model_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        _write_batch(run, result, batch["patch_id"], valid.cpu().numpy(), preds, logits)
        result.write_s += time.perf_counter() - t2
        bar.update(1)
    bar.close()
    result.loop_s = time.perf_counter() - t_loop


def _write_batch(run: _PredictionRun, result: InferResult, patch_ids: Sequence[str], keep: np.ndarray,
                 preds: Mapping[str, torch.Tensor], logits: Mapping[str, torch.Tensor]) -> None:
    """One georeferenced raster per kept patch and task (argmax classes, or class probabilities)."""
    opts = run.opts
    for k, pid in enumerate(patch_ids):
        if not keep[k]:
            continue  # a repeat that equalises the ranks' batch counts
        result.n_patches += 1
        if not run.todo["write"]:
            continue
        g = run.geo[pid]
        for t in run.tasks:
            if opts.output == "argmax":
                arr = preds[t][k].to(torch.uint8).cpu().numpy()
            else:
                arr = probabilities_u8(logits[t][k].float().cpu().numpy())
            path = prediction_path(Path(opts.out), t, pid, opts.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            crs, transform = (g.crs, g.transform(arr.shape[-1])) if run.todo["georeferenced"] else (None, None)
            write_raster(path, arr, crs, transform, run.names[t], t, opts.output, run.colors[t], opts.compression)
            result.files += 1


def _score(run: _PredictionRun, result: InferResult) -> None:
    """Sum the confusion matrices over the ranks, compute the metrics, write and print them."""
    for t in run.tasks:
        run.confmats[t].all_reduce(run.acc)
        cm = run.confmats[t].matrix.cpu().numpy()
        result.confmats[t] = cm
        result.metrics[t] = metrics_for_task(cm, run.cfg, t)
    if run.main:
        write_metrics(Path(run.opts.out), result.metrics, result.confmats)
        for t in run.tasks if run.opts.print_table else ():
            print(class_table_markdown(t, result.metrics[t]))


# --------------------------------------------------------------------------------------------
# Metrics only: score the prediction files of an earlier run
# --------------------------------------------------------------------------------------------
def metrics_only_config(opts: InferOptions, pred: Path) -> dict[str, Any]:
    """The config that says which patches, tasks, classes and weights a predicting run scored.

    `--config` when given; else the training config of `--checkpoint`; else the FLAIR-HUB
    defaults with the tasks whose folders exist under `<pred>/predictions/`.
    """
    if opts.config or opts.checkpoint:
        doc = our_checkpoint_config(opts.checkpoint) if opts.checkpoint else None
        if not opts.config and doc is None:
            raise ConfigError(f"--config: {opts.checkpoint} is not one of our checkpoints; give the training config "
                              "the predictions were made with")
        return infer_config(opts, doc)
    found = sorted(p.name for p in (pred / "predictions").iterdir() if p.is_dir()) if (pred / "predictions").is_dir() else []
    tasks = [t for t in found if t in CLASS_TABLES]
    if not tasks:
        raise ConfigError(f"--pred: no prediction folder <task>/ under {pred / 'predictions'}")
    raw = read_config_layers([DEFAULT_CONFIG_DIR])
    raw["labels"] = tasks
    raw.setdefault("data", {})["source"] = opts.data
    log.warning("no --config or --checkpoint: classes, weights and patch selection are the FLAIR-HUB defaults (%s)",
                DEFAULT_CONFIG_DIR)
    return validate_config(raw)


def read_prediction(pred: Path, task: str, patch_id: str) -> np.ndarray:
    """The `(H, W)` class map a predicting run wrote for `patch_id` (argmax file, else argmax of `_prob.tif`).

    For probability files the argmax of the stored (rounded) values is used, which can differ
    from the logits' argmax where two classes round to the same value.
    """
    path = prediction_path(pred, task, patch_id, "argmax")
    if path.is_file():
        with rasterio.open(path) as src:
            return src.read(1)
    prob = prediction_path(pred, task, patch_id, "class_prob")
    if prob.is_file():
        with rasterio.open(prob) as src:
            return src.read().argmax(axis=0).astype(np.uint8)
    raise FileNotFoundError(f"--pred: no prediction for {patch_id} ({path} or {prob.name})")


def score_predictions(opts: InferOptions) -> InferResult:
    """Metrics of the prediction files under `opts.pred` against the split's labels.

    Writes the same `<out>/metrics/` files as a predicting run (`out` defaults to `pred`) from
    the same confusion matrices: the patches are selected as that run selected them (the
    config's inputs and tasks, `--limit`), labels come from the shards, predictions from the
    GeoTIFFs. A patch without its prediction file is an error naming the file.
    """
    t_start = time.perf_counter()
    pred = Path(opts.pred or opts.out or "")
    if not (opts.pred or opts.out):
        raise ConfigError("--pred: missing (the folder of the run whose predictions are scored)")
    out = Path(opts.out) if opts.out else pred
    cfg = metrics_only_config(opts, pred)
    data = cfg["data"]
    src = open_source(opts.data, retries=data["retries"], s3_endpoint_url=data["s3_endpoint_url"], hf_endpoint=data["hf_endpoint"])
    catalog = Catalog(src)
    tasks = list(cfg["labels"])
    if not labelled_split(catalog, opts.split, tasks):
        raise ConfigError(f"--split: {opts.split!r} has no labels for {tasks} in {opts.data}: nothing to score")
    spec = SampleSpec.from_config(cfg, augment=False)
    ids = catalog.select(opts.split, spec.needed_modalities).patch_ids[: opts.limit] if opts.limit else None
    selection = catalog.select(opts.split, spec.needed_modalities, patch_ids=ids)
    labels_only = dataclasses.replace(spec, inputs=(), channels={}, filter_s2=False)
    loader = StreamingLoader(src, catalog, selection, labels_only, batch_size=opts.batch_size, seed=0, rank=0,
                             world_size=1, num_workers=opts.num_workers, shuffle=False, uneven="pad",
                             decode_threads=data["decode_threads"], verify=data["verify"])
    result = InferResult(device="cpu")
    confmats = {t: ConfusionMatrix(len(cfg["labels_configs"][t]["value_name"])) for t in tasks}
    log.info("scoring the predictions of %d patches of split %r under %s; tasks %s", len(selection), opts.split,
             pred, tasks)
    from tqdm import tqdm

    for batch in tqdm(loader, total=len(loader), unit="batch", desc="flair-infer --metrics-only",
                      disable=not opts.progress):
        for k, pid in enumerate(batch["patch_id"]):
            if not bool(batch["valid"][k]):
                continue
            result.n_patches += 1
            for t in tasks:
                confmats[t].update(torch.from_numpy(read_prediction(pred, t, pid).astype(np.int64)), batch[t][k].long())
    for t in tasks:
        result.confmats[t] = confmats[t].numpy()
        result.metrics[t] = metrics_for_task(result.confmats[t], cfg, t)
    write_metrics(out, result.metrics, result.confmats)
    for t in tasks if opts.print_table else ():
        print(class_table_markdown(t, result.metrics[t]))
    result.total_s = result.loop_s = time.perf_counter() - t_start
    log.info("scored %d patches in %.1f s; metrics in %s", result.n_patches, result.total_s, out / "metrics")
    return result


# --------------------------------------------------------------------------------------------
# Metrics files
# --------------------------------------------------------------------------------------------
def write_metrics(out: Path, metrics: Mapping[str, Mapping[str, Any]], confmats: Mapping[str, np.ndarray]) -> Path:
    """`<out>/metrics/`: per task `<TASK>_metrics.json`, `_per_class.csv`, `_confusion.csv`, PNG plots."""
    import json

    folder = out / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    summary = {}
    for task, m in metrics.items():
        cm = np.asarray(confmats[task], dtype=np.int64)
        names = [c["name"] for c in m["per_class"]]
        write_text_atomic(folder / f"{task}_metrics.json", json.dumps(dict(m), indent=2) + "\n")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["index", "name", "evaluated", "weight", "support", "iou", "precision", "recall", "f1"])
        for c in m["per_class"]:
            w.writerow([c["index"], c["name"], c["evaluated"], c["weight"], c["support"],
                        *("" if c[k] is None else f"{c[k]:.6f}" for k in ("iou", "precision", "recall", "f1"))])
        write_text_atomic(folder / f"{task}_per_class.csv", buf.getvalue())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["truth \\ prediction", *names])
        for name, row in zip(names, cm):
            w.writerow([name, *row.tolist()])
        write_text_atomic(folder / f"{task}_confusion.csv", buf.getvalue())
        plot_confusion(task, cm, names, folder / f"{task}_confusion.png")
        plot_iou(task, m, folder / f"{task}_iou.png")
        summary[task] = {k: m[k] for k in ("miou", "oa", "wiou", "mf1", "n_pixels")}
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    return folder
