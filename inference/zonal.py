"""`flair-zonal`: large-area detection, tile by tile, with bounded memory and resume.

The run, top to bottom:
1. `AreaRasters` validates the input rasters and lays the tile grid on the finest one.
2. A DataLoader reads the tiles not yet done (windowed reads, the training loader's
   preprocessing via `trainer.data.sample.preprocess_sample`), batched.
3. The model predicts each batch; each tile's core is cut out, mapped to the output grid
   (`output_px_meters`) and saved as one small file per tile and task in the work folder
   `<output_path>/<output_name>.tiles/` (temp name + rename, so a file there is complete).
4. When every tile is done, the cores are pasted into one GeoTIFF per task (each block written
   once when the core size allows), optionally converted to a COG.

An interrupted run restarts at step 2 with only the missing tiles (`resume: True`, the
default); the work folder records the geometry and settings of the run, and a run whose settings
differ refuses to mix its tiles with the old ones. A tile that fails (unreadable window, model
error) is reported with its id; the others go on, the mosaic is not written, and the next run
retries only the failed tiles. Peak memory depends on the tile and batch sizes, not the area.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from inference.model_io import check_zonal_model, load_inference_model, predict_logits
from inference.tile_layer import write_tile_layer
from inference.tiling import OutputGrid, Tile
from inference.writers import (
    describe,
    map_colors,
    open_output,
    output_profile,
    pick_blocksize,
    to_cog,
    write_qml,
)
from inference.zonal_config import active_tasks, to_model_config
from inference.zonal_reader import AreaRasters
from inference.zonal_resume import ResumeMismatch, WorkDir, file_digest
from trainer import read_config_layers
from trainer.data import SampleSpec, collate_batch, normalize_batch, preprocess_sample, to_model_inputs

log = logging.getLogger("flair.zonal")

WORK_FORMAT = 1


class ZonalError(RuntimeError):
    """Some tiles failed; the message lists their ids and errors. Rerun to retry only those."""


@dataclass
class RunReport:
    """What a run did, for the CLI summary and the benchmark."""

    tiles_total: int = 0
    tiles_skipped: int = 0  # already done by an earlier run
    tiles_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    read_s: float = 0.0
    model_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0
    area_km2: float = 0.0
    device: str = "cpu"


# --------------------------------------------------------------------------------------------
# Preprocessing spec (the training loader's, built from the zonal keys)
# --------------------------------------------------------------------------------------------
def sample_spec(cfg: Mapping[str, Any]) -> tuple[SampleSpec, dict[str, str]]:
    """The trainer's `SampleSpec` for the zonal inputs (`SampleSpec.from_zonal_config`), and each
    mono input's own normalisation type, which `zonal_model_inputs` applies (training has one for all)."""
    spec = SampleSpec.from_zonal_config(cfg)
    return spec, {m: cfg["modalities"][m]["normalization"]["type"] for m in spec.mono}


def zonal_model_inputs(batch: Mapping[str, Any], spec: SampleSpec, norm_types: Mapping[str, str],
                       device: torch.device) -> dict[str, Any]:
    """`trainer.data.normalize.to_model_inputs`, with each mono modality's own normalisation type."""
    base = dataclasses.replace(spec, norm_type="without")
    out = to_model_inputs(batch, base, device)
    for m in spec.mono:
        out[m] = normalize_batch(batch[m].to(device), m, dataclasses.replace(spec, norm_type=norm_types[m]))
    return out


# --------------------------------------------------------------------------------------------
# Tile reading (DataLoader workers)
# --------------------------------------------------------------------------------------------
class TileDataset(Dataset):
    """Reads and preprocesses one tile per item; failures come back as data, not exceptions."""

    def __init__(self, areas: AreaRasters, tiles: Sequence[Tile], spec: SampleSpec) -> None:
        self.areas, self.tiles, self.spec = areas, list(tiles), spec

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tile = self.tiles[i]
        t0 = time.perf_counter()
        try:
            arrays = self.areas.read_tile(tile)
            meta = {"modalities": {m: {"dates": self.areas.dates[m]} for m in self.areas.dates}}
            sample = preprocess_sample({"patch_id": tile.id, "meta": meta, "arrays": arrays}, self.spec)
            return {"index": i, "sample": sample, "read_s": time.perf_counter() - t0}
        except Exception as exc:  # reported per tile with its id; the run goes on
            return {"index": i, "error": f"{type(exc).__name__}: {exc}", "read_s": time.perf_counter() - t0}


def _collate_tiles(items: list[dict[str, Any]], spec: SampleSpec) -> dict[str, Any]:
    good = [it for it in items if "sample" in it]
    return {
        "indices": [it["index"] for it in good],
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "read_s": sum(it["read_s"] for it in items),
        "batch": collate_batch([it["sample"] for it in good], spec) if good else None,
    }


class _Collate:
    """Picklable collate function (DataLoader workers may be spawned)."""

    def __init__(self, spec: SampleSpec) -> None:
        self.spec = spec

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return _collate_tiles(items, self.spec)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
ModelLoader = Callable[[Mapping[str, Any], Mapping[str, int], torch.device], Any]


def default_model_loader(cfg: Mapping[str, Any], input_sizes: Mapping[str, int], device: torch.device) -> Any:
    """Our checkpoint (config inside) or a reference one (config from `model_config` or the zonal keys).

    The zonal keys were reconciled with the checkpoint's training config when the config was
    validated (`inference.zonal_checkpoint`); the model built here is checked once more against
    the inputs and tasks the run will feed it.
    """
    if cfg.get("model_config"):
        config = read_config_layers([cfg["model_config"]])  # overlays (`extends:`) included
    else:
        config = to_model_config(cfg)
    model, model_cfg = load_inference_model(cfg["model_weights"], config, input_sizes, device)
    check_zonal_model(cfg, model_cfg, Path(cfg["model_weights"]).name)
    return model


def select_device(cfg: Mapping[str, Any]) -> torch.device:
    if cfg.get("use_gpu"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("use_gpu is True but no CUDA device is available: running on CPU")
    return torch.device("cpu")


def output_paths(cfg: Mapping[str, Any]) -> dict[str, Path]:
    """Final raster per active task: `<output_name>_<TASK>_argmax.tif` / `_class-prob.tif` (`_COG` when converted)."""
    kind = "argmax" if cfg["output_type"] == "argmax" else "class-prob"
    cog = "_COG" if cfg["cog_conversion"] else ""
    root = Path(cfg["output_path"])
    return {t["name"]: root / f"{cfg['output_name']}_{t['name']}_{kind}{cog}.tif" for t in active_tasks(cfg)}


def run_zonal(cfg: Mapping[str, Any], model: Any = None, model_loader: ModelLoader | None = None,
              progress: bool = True) -> RunReport:
    """Run a validated zonal config (`inference.zonal_config.load_zonal_config`).

    `model` (any callable with the `trainer.model` forward contract) replaces loading
    `model_weights`; tests and benchmarks pass stand-ins here.
    """
    t_start = time.perf_counter()
    report = RunReport()
    for note in cfg.get("checkpoint_notes") or ():  # what the config took from, or kept against, the checkpoint
        (log.warning if note.startswith("checkpoint_overrides") else log.info)("%s", note)
    areas = AreaRasters(cfg)
    tasks = [t["name"] for t in active_tasks(cfg)]
    class_names = {t["name"]: list(t["class_names"].values()) for t in active_tasks(cfg)}
    ogrid = OutputGrid(areas.ref_res, float(cfg["output_px_meters"]), areas.width, areas.height)
    out_transform = ogrid.transform(areas.area_transform)
    kind = cfg["output_type"]
    report.area_km2 = areas.width * areas.height * areas.ref_res ** 2 / 1e6
    Path(cfg["output_path"]).mkdir(parents=True, exist_ok=True)

    fingerprint = {
        "format": WORK_FORMAT, "inputs": {m: areas.infos[m].path for m in areas.infos},
        "area": [areas.width, areas.height, areas.ref_res, list(areas.area_transform)[:6]],
        "tile": [areas.tile_px, areas.margin_px], "output": [ogrid.width, ogrid.height, ogrid.out_res, kind],
        "tasks": {t["name"]: t["class_names"] for t in active_tasks(cfg)},
        "preprocessing": {"modalities": cfg["modalities"], "ref_date": cfg["multitemp_model_ref_date"]},
        "model": [str(cfg["model_weights"]), file_digest(cfg["model_weights"]), cfg.get("model_config"),
                  cfg["monotemp_arch"]],
    }
    # JSON turns int keys into strings: compare what will be read back.
    fingerprint = json.loads(json.dumps(fingerprint))
    try:
        work = WorkDir(Path(cfg["output_path"]) / f"{cfg['output_name']}.tiles", fingerprint, tasks, cfg["resume"])
    except ResumeMismatch as exc:
        raise ZonalError(str(exc)) from None
    try:
        tiles = list(areas.grid)
        report.tiles_total = len(tiles)
        pending = [t for t in tiles if not work.done(t.id)]
        report.tiles_skipped = len(tiles) - len(pending)
        if cfg.get("write_dataframe"):
            write_tile_layer(Path(cfg["output_path"]) / f"{cfg['output_name']}_slicing_job.gpkg", tiles, areas)

        device = select_device(cfg)
        report.device = str(device)
        spec, norm_types = sample_spec(cfg)
        log.info("area %d x %d px at %.3g m (%s), %d tiles of %d px (margin %d), %d already done; output %d x %d px at %.3g m",
                 areas.width, areas.height, areas.ref_res, areas.reference, len(tiles), areas.tile_px, areas.margin_px,
                 report.tiles_skipped, ogrid.width, ogrid.height, ogrid.out_res)
        if pending:
            if model is None:
                model = (model_loader or default_model_loader)(cfg, areas.tile_sizes, device)
            job = TileJob(areas=areas, spec=spec, norm_types=norm_types, model=model, device=device, ogrid=ogrid,
                          work=work, tasks=tasks, kind=kind, report=report)
            _predict_tiles(job, pending, num_workers=int(cfg["num_worker"]), batch_size=int(cfg["batch_size"]),
                           progress=progress)
        if report.failed:
            report.total_s = time.perf_counter() - t_start
            shown = "\n".join(f"  {tid}: {msg}" for tid, msg in list(report.failed.items())[:20])
            more = f"\n  ... and {len(report.failed) - 20} more" if len(report.failed) > 20 else ""
            raise ZonalError(
                f"{len(report.failed)} of {len(tiles)} tiles failed (the others are saved in {work.root}; "
                f"run again to retry only the failed ones):\n{shown}{more}"
            )

        t0 = time.perf_counter()
        for task, path in output_paths(cfg).items():
            task_cfg = next(t for t in active_tasks(cfg) if t["name"] == task)
            colors = map_colors(task, len(task_cfg["class_names"]), task_cfg.get("label_channel_nomenclature", 1))
            assemble(work, tiles, task, path, areas, ogrid, out_transform, kind, class_names[task], colors, cfg)
            report.outputs.append(str(path))
        report.write_s += time.perf_counter() - t0
        if not cfg.get("keep_tiles"):
            shutil.rmtree(work.root, ignore_errors=True)
    finally:
        work.close()
    report.total_s = time.perf_counter() - t_start
    return report


@dataclass
class TileJob:
    """What predicting the tiles of one run needs, handed to `_predict_tiles` and `_predict_batch`
    as one object (the run's rasters, model, output grid and tile store)."""

    areas: AreaRasters
    spec: SampleSpec
    norm_types: Mapping[str, str]  # each mono input's own normalisation type (`sample_spec`)
    model: Any
    device: torch.device
    ogrid: OutputGrid
    work: WorkDir
    tasks: Sequence[str]
    kind: str  # output_type: argmax or class_prob
    report: RunReport


def _predict_tiles(job: TileJob, pending: Sequence[Tile], num_workers: int, batch_size: int, progress: bool) -> None:
    report = job.report
    # More reading processes than tiles would only start idle ones.
    workers = min(num_workers, len(pending))
    if workers < num_workers:
        log.info("num_worker %d capped at %d: there are %d tiles to read", num_workers, workers, len(pending))
    loader = DataLoader(
        TileDataset(job.areas, pending, job.spec), batch_size=batch_size, shuffle=False,
        num_workers=workers, collate_fn=_Collate(job.spec), persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
    bar = tqdm(total=report.tiles_total, initial=report.tiles_skipped, unit="tile", desc="zonal", disable=not progress)
    try:
        for item in loader:
            report.read_s += item["read_s"]
            for i, msg in item["errors"]:
                report.failed[pending[i].id] = msg
                log.error("tile %s: %s", pending[i].id, msg)
            if item["batch"] is not None:
                _predict_batch(job, item["batch"], [pending[i] for i in item["indices"]])
            bar.update(len(item["indices"]) + len(item["errors"]))
    finally:
        bar.close()
        job.areas.close()


def summary_lines(report: RunReport) -> list[str]:
    """The end-of-run summary (printed by the CLI and written to the run's log)."""
    t = max(report.total_s, 1e-9)
    return [
        f"tiles: {report.tiles_total} ({report.tiles_skipped} reused from an earlier run), device {report.device}",
        f"area: {report.area_km2:.4f} km2 in {t:.1f} s = {report.area_km2 / t * 3600:.3f} km2/h "
        f"(read {report.read_s:.1f} s, model {report.model_s:.1f} s, write {report.write_s:.1f} s)",
        *(f"wrote {p}" for p in report.outputs),
    ]


def _predict_batch(job: TileJob, batch: Mapping[str, Any], batch_tiles: Sequence[Tile]) -> None:
    report = job.report
    t0 = time.perf_counter()
    try:
        inputs = zonal_model_inputs(batch, job.spec, job.norm_types, job.device)
        logits = predict_logits(job.model, inputs, job.spec.series, job.areas.tile_px, job.tasks)
    except Exception as exc:
        report.model_s += time.perf_counter() - t0
        if len(batch_tiles) > 1:
            # Find the failing tile(s): retry one by one so that good tiles are still saved.
            for k, tile in enumerate(batch_tiles):
                _predict_batch(job, _slice_batch(batch, k), [tile])
            return
        report.failed[batch_tiles[0].id] = f"{type(exc).__name__}: {exc}"
        log.error("tile %s: model error: %s", batch_tiles[0].id, exc)
        return
    if job.device.type == "cuda":
        torch.cuda.synchronize()
    report.model_s += time.perf_counter() - t0
    t1 = time.perf_counter()
    for k, tile in enumerate(batch_tiles):
        for task in job.tasks:
            job.work.save(tile.id, task, core_output(logits[task][k], tile, job.ogrid, job.kind))
        report.tiles_done += 1
    report.write_s += time.perf_counter() - t1


def _slice_batch(batch: Mapping[str, Any], k: int) -> dict[str, Any]:
    out = {}
    for key, v in batch.items():
        out[key] = v[k : k + 1] if isinstance(v, (torch.Tensor, list)) else v
    return out


def core_output(logits: torch.Tensor, tile: Tile, ogrid: OutputGrid, kind: str) -> np.ndarray:
    """One tile's `(C, tile, tile)` logits -> its core on the output grid, uint8.

    argmax: `(h, w)` class indices; class_prob: `(C, h, w)` softmax x 255. Cells are picked by
    nearest neighbour on the global output grid (`OutputGrid`), so cores join without seams.
    """
    (ys, xs) = _out_window(tile, ogrid)
    rows = torch.as_tensor(ogrid.sample_index(*ys, *tile.core_y), dtype=torch.long, device=logits.device) - tile.y0
    cols = torch.as_tensor(ogrid.sample_index(*xs, *tile.core_x), dtype=torch.long, device=logits.device) - tile.x0
    picked = logits.index_select(1, rows).index_select(2, cols)
    if kind == "argmax":
        return picked.argmax(dim=0).to(torch.uint8).cpu().numpy()
    probs = torch.softmax(picked.double(), dim=0)
    return torch.round(probs * 255.0).to(torch.uint8).cpu().numpy()


def _out_window(tile: Tile, ogrid: OutputGrid) -> tuple[tuple[int, int], tuple[int, int]]:
    ys = ogrid.out_range(tile.core_y, ogrid.ref_height, ogrid.height)
    xs = ogrid.out_range(tile.core_x, ogrid.ref_width, ogrid.width)
    return ys, xs


def assemble(work: WorkDir, tiles: Sequence[Tile], task: str, path: Path, areas: AreaRasters, ogrid: OutputGrid,
             out_transform: Any, kind: str, class_names: list[str], colors: Any, cfg: Mapping[str, Any]) -> Path:
    """Paste every tile core of `task` into one GeoTIFF (then a COG when asked); memory: one core."""
    count = 1 if kind == "argmax" else len(class_names)
    block = pick_blocksize(_whole_out_stride(areas.grid.stride, ogrid))
    profile = output_profile(ogrid.width, ogrid.height, count, areas.crs, out_transform, cfg["compression"], block)
    plain = path.with_name(path.name.replace("_COG.tif", ".tif")) if cfg["cog_conversion"] else path
    with open_output(plain, profile) as dst:
        describe(dst, class_names, task, kind, colors if kind == "argmax" else None)  # before any pixel
        for tile in tiles:
            (y0, y1), (x0, x1) = _out_window(tile, ogrid)
            if y1 <= y0 or x1 <= x0:
                continue
            arr = work.load(tile.id, task)
            window = ((y0, y1), (x0, x1))
            if kind == "argmax":
                dst.write(arr, 1, window=window)
            else:
                dst.write(arr, window=window)
    if cfg["cog_conversion"]:
        to_cog(plain, path, cfg["compression"])
        plain.unlink()
    if kind == "argmax":
        write_qml(path, class_names, colors)
    return path


def _whole_out_stride(stride: int, ogrid: OutputGrid) -> int | None:
    """The core stride in output pixels when it is a whole number (else None)."""
    s = stride / ogrid.ratio
    return round(s) if abs(s - round(s)) < 1e-9 else None
