"""The `flair-zonal` configuration: the reference's `config_zonal_detection.yaml` keys, validated.

Every key of the reference file is accepted with its meaning unchanged; a few optional keys are
ours (marked "ours" below). Each value is checked at start-up with an error naming its dotted
key, so a typo fails before any tile is read. Paths are resolved relative to the config file's
folder (the reference resolves them against the working directory, which makes a config
depend on where it is launched from).

Deliberate differences from the reference, all documented in docs/inference.md:
- `DEM_ELEV.channels` is ignored (both bands are read, as in training); `calc_elevation` and
  `calc_elevation_stack_dsm` are applied to the tiles exactly as the training loader does.
- Time-series `channels` select bands per date (the reference reads every band and only uses
  the list's length).
- `model_weights` may be one of our checkpoints (safetensors + config JSON beside it) or a
  reference `.ckpt` / `.pth` / `.safetensors`.
- When the checkpoint's training config is known (stored in ours, or `model_config`), keys the
  file leaves out take the training values and keys that contradict them are refused unless
  listed in `checkpoint_overrides` (`inference.zonal_checkpoint`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from inference.zonal_checkpoint import reconcile_with_checkpoint, training_config_of
from packer.schema import LABEL_MODALITIES, MODALITIES, MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS, Modality
from trainer import (
    ConfigError,
    anything,
    builtin_config_paths,
    is_bool,
    is_int,
    is_number,
    is_str,
    list_of,
    mapping,
    month_day,
    one_of,
    optional,
)

INPUT_MODALITIES = (*MONO_TEMPORAL_INPUTS, *TIME_SERIES_INPUTS)
"""Model inputs (the Sentinel-2 mask is not one: it is `SENTINEL2_TS.filter_clouds_img_path`)."""
OUTPUT_TYPES = ("argmax", "class_prob")
COMPRESSIONS = ("lzw", "zstd", "deflate")
AVERAGE_PERIODS = ("monthly", "semi-monthly")
NORM_TYPES = ("custom", "scaling", "without")

_NORMALIZATION = mapping(
    {"type": one_of(*NORM_TYPES), "means": list_of(is_number()), "stds": list_of(is_number())},
    required=("type",),
)

_MODALITY_BLOCK = {
    "input_img_path": optional(is_str),
    "channels": optional(list_of(is_int(1), min_len=1)),
    "normalization": optional(_NORMALIZATION),
    # DEM_ELEV
    "calc_elevation": is_bool,
    "calc_elevation_stack_dsm": is_bool,
    # time series
    "dates_txt": optional(is_str),
    "filter_clouds": is_bool,
    "filter_clouds_img_path": optional(is_str),
    "temporal_average": is_bool,
    "average_period": one_of(*AVERAGE_PERIODS),
    # ours: the cloud filter's thresholds (the reference zonal path always uses these defaults)
    "filter_max_cloud": is_number(0, 100),
    "filter_max_snow": is_number(0, 100),
    "filter_max_frac_cover": is_number(0, 1),
}

_TASK = mapping(
    {"name": one_of(*LABEL_MODALITIES), "active": is_bool, "class_names": anything,
     # ours: the LPIS level written (1-based band of the label), as in training
     "label_channel_nomenclature": is_int(1, 3)},
    required=("name", "class_names"),
)

ROOT_SCHEMA: dict[str, Any] = {
    # I/O
    "output_path": is_str,
    "output_name": is_str,
    "write_dataframe": is_bool,
    "output_type": one_of(*OUTPUT_TYPES),
    "cog_conversion": is_bool,
    "compression": one_of(*COMPRESSIONS),  # ours
    "resume": is_bool,  # ours: reuse the tiles a previous run of the same config finished
    "keep_tiles": is_bool,  # ours: keep the per-tile work folder after the mosaic is written
    # model and inference
    "model_weights": is_str,
    "model_config": optional(is_str),  # ours: config for a reference checkpoint (else from this file)
    "checkpoint_overrides": optional(list_of(is_str)),  # ours: keys whose value may differ from the training config
    "use_gpu": is_bool,
    "batch_size": is_int(1),
    "num_worker": is_int(0),
    "img_pixels_detection": is_int(2),
    "margin": is_int(0),
    "output_px_meters": is_number(1e-6),
    # model framework
    "monotemp_arch": is_str,
    "multitemp_model_ref_date": month_day,
    # inputs and tasks
    "modalities": anything,  # checked by _check_modalities (keys depend on `inputs`)
    "tasks": list_of(_TASK, min_len=1),
}

REQUIRED = ("output_path", "output_name", "model_weights", "img_pixels_detection", "margin",
            "modalities", "tasks", "output_px_meters")
"""The reference's required keys (`config.py::validate_config`)."""

DEFAULTS: dict[str, Any] = {
    "write_dataframe": False, "output_type": "argmax", "cog_conversion": False, "compression": "lzw",
    "resume": True, "keep_tiles": False, "model_config": None, "checkpoint_overrides": [], "use_gpu": False, "batch_size": 1,
    "num_worker": 0, "monotemp_arch": "swin_base_patch4_window12_384-upernet",
    "multitemp_model_ref_date": "05-15",
}

UTAE_DEFAULTS: dict[str, Any] = {
    "encoder_widths": [64, 64, 64, 128], "decoder_widths": [32, 32, 64, 128], "out_conv": [32, 19],
    "str_conv_k": 3, "str_conv_s": 1, "str_conv_p": 1, "agg_mode": "att_group", "encoder_norm": "group",
    "n_head": 16, "d_model": 256, "d_k": 4, "pad_value": 0, "padding_mode": "reflect",
}
"""The U-TAE settings the reference's zonal script uses for every series (`model_utils.prepare_model_config`)."""

CLOUD_FILTER_DEFAULTS = {"filter_max_cloud": 1, "filter_max_snow": 1, "filter_max_frac_cover": 0.05}


def load_zonal_config(path: str | Path, check_files: bool = True, base_dir: str | Path | None = None,
                      overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, validate and complete a zonal config file; paths come back absolute, resolved against
    `base_dir` (default: the file's folder).

    `overrides` (the CLI's `--override KEY`) are added to the file's `checkpoint_overrides`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such zonal config file")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if overrides:
        raw["checkpoint_overrides"] = [*(raw.get("checkpoint_overrides") or []), *overrides]
    return validate_zonal_config(raw, base_dir=path.parent if base_dir is None else base_dir, check_files=check_files)


def validate_zonal_config(raw: Mapping[str, Any], base_dir: str | Path = ".", check_files: bool = True) -> dict[str, Any]:
    """Check every key; fill defaults; resolve paths against `base_dir`.

    With `check_files`, the model weights and every active input file must exist.
    """
    cfg = copy.deepcopy(dict(raw))
    for key in REQUIRED:
        if key not in cfg or cfg[key] is None:
            raise ConfigError(f"{key}: missing required key")
    cfg = mapping(ROOT_SCHEMA)(cfg, "")
    for k, v in DEFAULTS.items():
        if cfg.get(k) is None:
            cfg[k] = copy.deepcopy(v)
    base = Path(base_dir)
    cfg["output_path"] = str(_resolve(base, cfg["output_path"]))
    cfg["model_weights"] = str(_resolve(base, cfg["model_weights"]))
    if cfg["model_config"]:
        local = _resolve(base, cfg["model_config"])
        shipped = builtin_config_paths().get(cfg["model_config"])
        cfg["model_config"] = str(shipped if shipped is not None and not local.exists() else local)  # `LC-A` etc.
    if "/" in cfg["output_name"] or "\\" in cfg["output_name"]:
        raise ConfigError(f"output_name: a file name stem without folders, got {cfg['output_name']!r}")
    if cfg["img_pixels_detection"] - 2 * cfg["margin"] <= 0:
        raise ConfigError(
            f"margin: {cfg['margin']} px leaves no core in tiles of img_pixels_detection="
            f"{cfg['img_pixels_detection']} px (need img_pixels_detection > 2 * margin)"
        )
    cfg["modalities"] = _check_modalities(cfg["modalities"], base, check_files)
    cfg["tasks"] = _check_tasks(cfg["tasks"])
    if check_files and not Path(cfg["model_weights"]).is_file():
        raise ConfigError(f"model_weights: file not found: {cfg['model_weights']}")
    return reconcile_with_checkpoint(raw, cfg, training_config_of(cfg["model_weights"], cfg["model_config"]))


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q).resolve()


def _check_modalities(mods: Any, base: Path, check_files: bool) -> dict[str, Any]:
    if not isinstance(mods, dict):
        raise ConfigError(f"modalities: expected a mapping, got {mods!r}")
    allowed = {"inputs", *INPUT_MODALITIES}
    for k in mods:
        if k not in allowed:
            raise ConfigError(f"modalities.{k}: unknown key (expected inputs or one of {', '.join(INPUT_MODALITIES)})")
    if "inputs" not in mods:
        raise ConfigError("modalities.inputs: missing required key")
    inputs = mapping({m: is_bool for m in INPUT_MODALITIES})(mods["inputs"], "modalities.inputs")
    active = [m for m in INPUT_MODALITIES if inputs.get(m)]
    if not active:
        raise ConfigError("modalities.inputs: no input modality is enabled")
    out: dict[str, Any] = {"inputs": inputs}
    for m in INPUT_MODALITIES:
        if m not in mods:
            continue
        key = f"modalities.{m}"
        block = mapping(_MODALITY_BLOCK)(mods[m], key)
        if m in active:
            block = _check_active_block(m, block, key, base, check_files)
        out[m] = block
    for m in active:
        if m not in out:
            raise ConfigError(f"modalities.{m}: missing block for an enabled input")
    return out


def _check_active_block(m: str, block: dict[str, Any], key: str, base: Path, check_files: bool) -> dict[str, Any]:
    mod = MODALITIES[m]
    if not block.get("input_img_path"):
        raise ConfigError(f"{key}.input_img_path: missing for an enabled input")
    block["input_img_path"] = str(_resolve(base, block["input_img_path"]))
    if check_files and not Path(block["input_img_path"]).is_file():
        raise ConfigError(f"{key}.input_img_path: file not found: {block['input_img_path']}")
    chans = block.get("channels")
    if mod.elevation:
        block["channels"] = None  # both bands, as in training (see module docstring)
        block.setdefault("calc_elevation", False)
        block.setdefault("calc_elevation_stack_dsm", False)
    elif chans:
        for i, c in enumerate(chans):
            if c > mod.bands_per_date:
                raise ConfigError(f"{key}.channels[{i}]: channel {c} does not exist ({m} has "
                                  f"{mod.bands_per_date} bands{' per date' if mod.time_series else ''}, 1-based)")
    if mod.time_series:
        if not block.get("dates_txt"):
            raise ConfigError(f"{key}.dates_txt: required for a time series (one YYYYMMDD per line, band order)")
        block["dates_txt"] = str(_resolve(base, block["dates_txt"]))
        if check_files and not Path(block["dates_txt"]).is_file():
            raise ConfigError(f"{key}.dates_txt: file not found: {block['dates_txt']}")
        block.setdefault("temporal_average", False)
        block.setdefault("average_period", "monthly")
        block.setdefault("filter_clouds", False)
        if block["filter_clouds"]:
            if mod.mask is None:
                raise ConfigError(f"{key}.filter_clouds: only SENTINEL2_TS has a cloud mask")
            if not block.get("filter_clouds_img_path"):
                raise ConfigError(f"{key}.filter_clouds_img_path: required when filter_clouds is True")
            block["filter_clouds_img_path"] = str(_resolve(base, block["filter_clouds_img_path"]))
            if check_files and not Path(block["filter_clouds_img_path"]).is_file():
                raise ConfigError(f"{key}.filter_clouds_img_path: file not found: {block['filter_clouds_img_path']}")
        for k, v in CLOUD_FILTER_DEFAULTS.items():
            block.setdefault(k, v)
        block["normalization"] = None  # the reference never normalises series
    else:
        norm = block.get("normalization") or {"type": "without"}
        if norm["type"] == "custom":
            means, stds = norm.get("means"), norm.get("stds")
            if not means or not stds:
                raise ConfigError(f"{key}.normalization.means: type is custom but means / stds are missing")
            if len(means) != len(stds):
                raise ConfigError(f"{key}.normalization.means: {len(means)} means but {len(stds)} stds")
            if any(s == 0 for s in stds):
                raise ConfigError(f"{key}.normalization.stds: a standard deviation is 0")
            needed = input_channel_count(m, block)
            if len(means) < needed:
                raise ConfigError(f"{key}.normalization.means: {len(means)} values for {needed} channels")
        block["normalization"] = norm
    return block


def input_channel_count(m: str, block: Mapping[str, Any]) -> int:
    """Channels the model sees for modality `m` (per date for a series)."""
    return MODALITIES[m].output_channels(block.get("channels"), calc_elevation=bool(block.get("calc_elevation")),
                                         stack_dsm=bool(block.get("calc_elevation_stack_dsm")))


def _check_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = set()
    for i, t in enumerate(tasks):
        key = f"tasks[{i}]"
        if t["name"] in seen:
            raise ConfigError(f"{key}.name: task {t['name']} listed twice")
        seen.add(t["name"])
        t.setdefault("active", True)
        t.setdefault("label_channel_nomenclature", 1)
        names = t["class_names"]
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not isinstance(names, dict) or not names:
            raise ConfigError(f"{key}.class_names: expected a mapping of class index -> name")
        if any(isinstance(k, bool) or not isinstance(k, int) for k in names) or sorted(names) != list(range(len(names))):
            raise ConfigError(f"{key}.class_names: class indices must be 0..{len(names) - 1}")
        if len(names) > 256:
            raise ConfigError(f"{key}.class_names: {len(names)} classes do not fit a uint8 output")
        t["class_names"] = {k: str(names[k]) for k in sorted(names)}
    if not any(t["active"] for t in tasks):
        raise ConfigError("tasks: no task is active")
    return tasks


def active_modalities(cfg: Mapping[str, Any]) -> list[str]:
    """Enabled inputs in the schema's order."""
    return [m for m in INPUT_MODALITIES if cfg["modalities"]["inputs"].get(m)]


def active_tasks(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [t for t in cfg["tasks"] if t["active"]]


def to_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The reference training-style config the model builder takes, derived from zonal keys.

    Mirrors the reference's `prepare_model_config`: the architecture comes from `monotemp_arch`,
    the U-TAE settings are the reference defaults, and the active tasks become `labels`.
    """
    active = active_modalities(cfg)
    mods = cfg["modalities"]
    tasks = active_tasks(cfg)

    def block_of(rule: Callable[[Modality], Any]) -> Mapping[str, Any]:
        return next(((mods.get(m) or {}) for m in INPUT_MODALITIES if rule(MODALITIES[m])), {})

    dem = block_of(lambda mod: mod.elevation)
    s2 = block_of(lambda mod: mod.mask)  # the series with a cloud mask
    averages: dict[str, Any] = {}  # the reference has one switch for both S1 orbits: either turns it on
    for m in TIME_SERIES_INPUTS:
        block, key = mods.get(m) or {}, MODALITIES[m].temporal_average_key
        averages[key] = averages.get(key) or (
            block.get("average_period", "monthly") if block.get("temporal_average") else False)

    return {
        "modalities": {
            "inputs": {m: m in active for m in INPUT_MODALITIES},
            "inputs_channels": {m: list((mods.get(m) or {}).get("channels") or []) for m in INPUT_MODALITIES},
            "aux_loss": {m: False for m in INPUT_MODALITIES},
            "modality_dropout": {m: 0.0 for m in INPUT_MODALITIES},
            "pre_processings": {
                "calc_elevation": bool(dem.get("calc_elevation", False)),
                "calc_elevation_stack_dsm": bool(dem.get("calc_elevation_stack_dsm", False)),
                "filter_sentinel2": bool(s2.get("filter_clouds", False)),
                **averages,
                "use_augmentation": False,
            },
        },
        "models": {
            "monotemp_model": {"arch": cfg["monotemp_arch"], "new_channels_init_mode": "random"},
            "multitemp_model": {**UTAE_DEFAULTS, "ref_date": cfg["multitemp_model_ref_date"]},
        },
        "labels": [t["name"] for t in tasks],
        "labels_configs": {
            t["name"]: {"value_name": dict(t["class_names"]),
                        "label_channel_nomenclature": t.get("label_channel_nomenclature", 1)}
            for t in tasks
        },
    }
