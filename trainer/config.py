"""Load and validate the FLAIR-HUB training configuration.

We accept the reference's four YAML files (`config_task`, `config_modalities`, `config_models`,
`config_supervision`) unchanged, given as a directory or a list of files, merged by top-level key
like the reference does. On top we add one optional section, `data`, that says where the packed
shards live and how they are streamed. Every key is checked against a declarative schema so that a
typo or a wrong value fails at start-up with the dotted key path in the message, instead of a
KeyError deep in a DataLoader worker hours later.

The result is the reference's plain nested dict (so code written against the reference's keys
keeps working), with the `data` section completed with its defaults.
"""

from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from packer.storage.retry import DEFAULT_ATTEMPTS
from packer.schema import (
    INPUT_MODALITIES, LABEL_MODALITIES, LPIS_LEVEL_CLASS_COUNTS, MODALITIES, MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS,
)
from trainer.builtin_configs import builtin_configs

NORM_TYPES = ("custom", "scaling", "without")
AVERAGE_PERIODS = ("monthly", "semi-monthly")
UNEVEN_MODES = ("pad", "drop")
ON_ERROR_MODES = ("fail", "skip")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message starts with its dotted key path."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_yaml_files(paths: str | Path | Iterable[str | Path]) -> dict[str, Any]:
    """Merge YAML files (or every `*.yaml` of a directory) by top-level key, as the reference does.

    Unlike the reference, a top-level key defined in two files is an error: the reference silently
    kept whichever file `os.listdir` returned last.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not found:
                raise ConfigError(f"{p}: directory holds no .yaml file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such config file or directory")
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            try:
                content = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{f}: not valid YAML: {exc}") from None
        if content is None:
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{f}: top level must be a mapping, got {type(content).__name__}")
        for key, value in content.items():
            if key in merged:
                raise ConfigError(f"{key}: defined in both {origin[key]} and {f}")
            merged[key] = value
            origin[key] = f
    return merged


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, recursively for mappings; other values are replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config_path(path: str | Path) -> Path:
    """`path` itself when it exists, else the shipped config of that name (`LC-A`, `flair-hub`, ...).

    Built-in names make an installed package usable without a clone (`--config LC-A`); a file or
    folder of that name in the current directory still wins, so nothing a user has is shadowed.
    """
    p = Path(path)
    if p.exists():
        return p
    shipped = builtin_configs()
    if str(path) in shipped:
        return shipped[str(path)]
    raise ConfigError(f"{path}: no such config file or directory, and not a built-in config name "
                      f"(built-in: {', '.join(shipped)})")


def read_config_layers(paths: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """Read config layers in order and deep-merge them, later ones winning key by key.

    A layer is a directory (its `*.yaml` merged by top-level key, a key defined twice being an
    error, as the reference reads its four files) or one YAML file. A layer may name its base
    with `extends: <path relative to the layer, or a built-in name>`, so that a seed overlay
    such as `configs/seed/LC-A.yaml` is self-contained. Each path may also be a built-in name
    (`resolve_config_path`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ConfigError("--config: give at least one config directory or YAML file")
    merged: dict[str, Any] = {}
    for p in paths:
        merged = deep_merge(merged, _read_layer(resolve_config_path(p), seen=()))
    return merged


def _read_layer(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    layer = read_yaml_files(path)
    base = layer.pop("extends", None)
    if base is None:
        return layer
    if not isinstance(base, (str, list)):
        raise ConfigError(f"{path}: extends: expected a path or a list of paths, got {base!r}")
    merged: dict[str, Any] = {}
    for b in [base] if isinstance(base, str) else base:
        target = (path.parent if path.is_file() else path) / b
        if not target.exists() and str(b) in builtin_configs():
            target = builtin_configs()[str(b)]
        merged = deep_merge(merged, _read_layer(target, seen + (path.resolve(),)))
    return deep_merge(merged, layer)


def load_config(paths: str | Path | Iterable[str | Path], require_data: bool = False) -> dict[str, Any]:
    """Read config layers (`read_config_layers`: directories, files, `extends:`, built-in names)
    and validate them (`validate_config`): the loader's configuration, without the `train:` section
    that only `flair-train` uses (it is ignored here)."""
    raw = read_config_layers(list(paths) if not isinstance(paths, (str, Path)) else paths)
    raw.pop("train", None)
    return validate_config(raw, require_data=require_data)


# --------------------------------------------------------------------------------------------
# Validators: each takes (value, key path) and returns the (possibly normalised) value
# --------------------------------------------------------------------------------------------
Validator = Callable[[Any, str], Any]


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def is_bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "True or False", v)
    return v


def is_int(lo: int | None = None, hi: int | None = None) -> Validator:
    def check(v: Any, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _fail(key, f"an integer in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]", v)
        return v
    return check


def is_number(lo: float | None = None, hi: float | None = None) -> Validator:
    def check(v: Any, key: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _fail(key, f"a number in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]", v)
        return v
    return check


def is_str(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(key, "a non-empty string", v)
    return v


def optional(inner: Validator) -> Validator:
    def check(v: Any, key: str) -> Any:
        return None if v is None else inner(v, key)
    return check


def one_of(*choices: Any) -> Validator:
    def check(v: Any, key: str) -> Any:
        if not any(v == c and type(v) is type(c) for c in choices):  # True must not match 1
            raise _fail(key, f"one of {list(choices)}", v)
        return v
    return check


def list_of(inner: Validator, min_len: int = 0, length: int | None = None) -> Validator:
    def check(v: Any, key: str) -> list:
        if not isinstance(v, list) or len(v) < min_len or (length is not None and len(v) != length):
            n = f"exactly {length}" if length is not None else f"at least {min_len}"
            raise _fail(key, f"a list of {n} items", v)
        return [inner(x, f"{key}[{i}]") for i, x in enumerate(v)]
    return check


def anything(v: Any, key: str) -> Any:
    return v


def mapping(schema: Mapping[str, Validator | dict], required: Iterable[str] = (), allow_extra: bool = False) -> Validator:
    """A mapping whose keys are checked against `schema`; unknown keys are errors unless allowed."""
    required = tuple(required)

    def check(v: Any, key: str) -> dict:
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise _fail(key, "a mapping", v)
        out = dict(v)
        for name in v:
            if name not in schema and not allow_extra:
                known = ", ".join(map(str, schema))
                raise ConfigError(f"{_join(key, name)}: unknown key (expected one of: {known})")
        for name in required:
            if name not in v:
                raise ConfigError(f"{_join(key, name)}: missing required key")
        for name, sub in schema.items():
            if name in v:
                validator = mapping(sub) if isinstance(sub, dict) else sub
                out[name] = validator(v[name], _join(key, name))
        return out
    return check


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def per_modality(inner: Validator, names: Iterable[str] = INPUT_MODALITIES) -> Validator:
    """A mapping keyed by modality names (a subset), each value checked by `inner`."""
    return mapping({n: inner for n in names})


def _mm_dd(v: Any, key: str) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"\d{2}-\d{2}", v):
        raise _fail(key, "a 'MM-DD' string such as '05-15'", v)
    month, day = map(int, v.split("-"))
    try:
        datetime.date(2001, month, day)  # a non-leap year: 02-29 would fail for most series
    except ValueError:
        raise _fail(key, "a valid month-day", v) from None
    return v


def _aux_loss_weight(v: Any, key: str) -> Any:
    """One weight for every auxiliary head (the reference configs' form), or one per modality.

    A modality left out of the mapping gets 1, as in the reference's `aux_loss_weight.get(mod, 1.0)`.
    """
    if isinstance(v, dict):
        return per_modality(is_number(0))(v, key)
    return is_number(0)(v, key)


def _period(v: Any, key: str) -> Any:
    if v is False or v is None:
        return False
    if v not in AVERAGE_PERIODS:
        raise _fail(key, f"False or one of {list(AVERAGE_PERIODS)}", v)
    return v


# --------------------------------------------------------------------------------------------
# Schema of the four reference files (every key the reference reads) + our `data` section
# --------------------------------------------------------------------------------------------
TASK_SCHEMA: dict[str, Any] = {
    "paths": mapping({
        "out_folder": optional(is_str), "out_model_name": optional(is_str),
        "train_csv": optional(is_str), "val_csv": optional(is_str), "test_csv": optional(is_str),
        "global_mtd_folder": optional(is_str), "ckpt_model_path": optional(is_str),
    }),
    "tasks": mapping({
        "train": is_bool,
        "train_tasks": mapping({"init_weights_only_from_ckpt": is_bool, "resume_training_from_ckpt": is_bool}),
        "predict": is_bool, "write_files": is_bool, "georeferencing_output": is_bool, "metrics_only": is_bool,
    }),
    "hyperparams": mapping({
        "num_epochs": is_int(1), "batch_size": is_int(1), "seed": is_int(0), "learning_rate": is_number(0),
        "optimizer": one_of("sgd", "adam", "adamw"), "optim_weight_decay": is_number(0),
        "optim_betas": list_of(is_number(0, 1), length=2),
        "scheduler": optional(one_of("one_cycle_lr", "reduce_on_plateau", "cycle_then_plateau")),
        "warmup_fraction": is_number(0, 1), "plateau_patience": is_int(0),
    }, required=("batch_size", "seed")),
    "hardware": mapping({
        "accelerator": one_of("gpu", "cpu", "auto", "cuda", "mps"), "num_nodes": is_int(1),
        "gpus_per_node": is_int(0), "strategy": is_str, "num_workers": is_int(0),
    }),
    "saving": mapping({
        "ckpt_save_also_last": is_bool, "ckpt_weights_only": is_bool, "ckpt_monitor": is_str,
        "ckpt_monitor_mode": one_of("max", "min"), "ckpt_earlystopping_patience": is_int(0),
        "cp_csv_and_conf_to_output": is_bool, "enable_progress_bar": is_bool, "progress_rate": is_int(1),
        "ckpt_verbose": is_bool, "verbose_config": is_bool,
    }),
}

_AVERAGE_KEYS = tuple(dict.fromkeys(MODALITIES[m].temporal_average_key for m in TIME_SERIES_INPUTS))
"""`pre_processings` switches of temporal averaging (one for S2, one shared by both S1 orbits)."""

_NORM_KEYS: dict[str, Validator] = {"norm_type": one_of(*NORM_TYPES)}
for _m in MONO_TEMPORAL_INPUTS:  # the series are never normalised (the reference)
    _NORM_KEYS[f"{_m}_means"] = list_of(is_number(), min_len=1)
    _NORM_KEYS[f"{_m}_stds"] = list_of(is_number(), min_len=1)

MODALITIES_SCHEMA: dict[str, Any] = {
    "modalities": mapping({
        "inputs": per_modality(is_bool),
        "inputs_channels": per_modality(optional(list_of(is_int(1), min_len=1))),
        "aux_loss": per_modality(is_bool),
        "aux_loss_weight": _aux_loss_weight,
        "modality_dropout": per_modality(is_number(0, 1)),
        "pre_processings": mapping({
            "filter_sentinel2": is_bool,
            "filter_sentinel2_max_cloud": is_number(0, 100),
            "filter_sentinel2_max_snow": is_number(0, 100),
            "filter_sentinel2_max_frac_cover": is_number(0, 1),
            **{key: _period for key in _AVERAGE_KEYS},
            "calc_elevation": is_bool,
            "calc_elevation_stack_dsm": is_bool,
            "use_augmentation": is_bool,
        }, required=("filter_sentinel2", *_AVERAGE_KEYS, "calc_elevation", "calc_elevation_stack_dsm",
                     "use_augmentation")),
        "normalization": mapping(_NORM_KEYS, required=("norm_type",)),
    }, required=("inputs", "pre_processings", "normalization")),
}

MODELS_SCHEMA: dict[str, Any] = {
    "models": mapping({
        "monotemp_model": mapping({
            "arch": is_str,
            "new_channels_init_mode": one_of("copy_first", "copy_second", "copy_third", "random"),
            # flair-stream: None = random init, 'imagenet' = pretrained download, or a weights file path.
            "encoder_weights": optional(is_str),
        }),
        "multitemp_model": mapping({
            "ref_date": _mm_dd,
            "encoder_widths": list_of(is_int(1), min_len=1), "decoder_widths": list_of(is_int(1), min_len=1),
            "out_conv": list_of(is_int(1), min_len=1),
            "str_conv_k": is_int(1), "str_conv_s": is_int(1), "str_conv_p": is_int(0),
            "agg_mode": one_of("att_group", "att_mean", "mean"), "encoder_norm": one_of("group", "batch", "instance"),
            "n_head": is_int(1), "d_model": optional(is_int(1)), "d_k": is_int(1),
            "pad_value": is_number(), "padding_mode": one_of("reflect", "zeros", "replicate", "circular"),
        }, required=("ref_date",)),
    }),
}

_WEIGHTS = mapping({
    "default": is_number(0),
    "default_exceptions": optional(mapping({}, allow_extra=True)),
    "per_modality_exceptions": optional(mapping({}, allow_extra=True)),
})
_LABEL_CONFIG = mapping({
    "task_weight": is_number(0),
    "label_channel_nomenclature": is_int(1),
    "value_name": mapping({}, allow_extra=True),
    "value_weights": _WEIGHTS,
}, required=("value_name",))

SUPERVISION_SCHEMA: dict[str, Any] = {
    "labels": list_of(one_of(*LABEL_MODALITIES), min_len=1),
    "labels_configs": mapping({name: _LABEL_CONFIG for name in LABEL_MODALITIES}),
}

DATA_DEFAULTS: dict[str, Any] = {
    "source": None, "train_split": "train", "val_split": "valid", "test_split": "test",
    "verify": False, "shuffle_window": 512, "uneven": "pad", "decode_threads": 4, "retries": DEFAULT_ATTEMPTS,
    "on_error": "fail", "s3_endpoint_url": None, "hf_endpoint": None, "persistent_workers": True,
    "decoded_cache": None, "decoded_cache_min_free_gb": 20,
    "select": {"domains": [], "patch_ids": None, "contains_class": {}, "min_class_share": {}},
    "class_balanced": False,
}

DATA_SCHEMA: dict[str, Any] = {
    "data": mapping({
        "source": optional(is_str), "train_split": is_str, "val_split": is_str, "test_split": is_str,
        "verify": is_bool, "shuffle_window": is_int(0), "uneven": one_of(*UNEVEN_MODES),
        "decode_threads": is_int(0, 64), "retries": is_int(1, 100), "on_error": one_of(*ON_ERROR_MODES),
        "s3_endpoint_url": optional(is_str), "hf_endpoint": optional(is_str), "persistent_workers": is_bool,
        "decoded_cache": optional(is_str), "decoded_cache_min_free_gb": is_number(0),
        "select": mapping({
            "domains": optional(list_of(is_str)),
            "patch_ids": anything,  # list of ids or a file path; checked in _check_select
            "contains_class": optional(mapping({n: is_int(0) for n in LABEL_MODALITIES})),
            "min_class_share": optional(mapping({n: mapping({}, allow_extra=True) for n in LABEL_MODALITIES})),
        }),
        "class_balanced": is_bool,
    }),
}

SECTION_FILES = {
    **{k: "config_task.yaml" for k in TASK_SCHEMA},
    **{k: "config_modalities.yaml" for k in MODALITIES_SCHEMA},
    **{k: "config_models.yaml" for k in MODELS_SCHEMA},
    **{k: "config_supervision.yaml" for k in SUPERVISION_SCHEMA},
    "data": "config_task.yaml (flair-stream)",
}
ROOT_SCHEMA = {**TASK_SCHEMA, **MODALITIES_SCHEMA, **MODELS_SCHEMA, **SUPERVISION_SCHEMA, **DATA_SCHEMA}


# --------------------------------------------------------------------------------------------
# Whole-config checks (relations between keys)
# --------------------------------------------------------------------------------------------
def validate_config(cfg: Mapping[str, Any], require_data: bool = False) -> dict[str, Any]:
    """Check every key and the relations between keys; return a copy with `data` defaults filled.

    Sections the loader needs (`modalities`, `labels`, `labels_configs`, `hyperparams`,
    `models.multitemp_model.ref_date`) are required; the others are checked when present.
    """
    cfg = copy.deepcopy(dict(cfg))
    for section in ("modalities", "labels", "labels_configs", "models", "hyperparams"):
        if section not in cfg:
            raise ConfigError(f"{section}: missing section (expected in {SECTION_FILES[section]})")
    cfg = mapping(ROOT_SCHEMA)(cfg, "")
    cfg["data"] = _with_defaults(cfg.get("data") or {}, DATA_DEFAULTS)
    if require_data and not cfg["data"]["source"]:
        raise ConfigError("data.source: missing (a local directory or an s3://, https://, hf:// URL)")
    if "multitemp_model" not in cfg["models"]:
        raise ConfigError("models.multitemp_model.ref_date: missing required key")
    _check_modalities(cfg)
    _check_labels(cfg)
    _check_select(cfg)
    _check_source(cfg)
    return cfg


def _check_source(cfg: dict[str, Any]) -> None:
    """`data.source`: a scheme some reader handles, well formed (no I/O: the source is opened later)."""
    from packer.storage.read import SourceURLError, check_source_url

    if cfg["data"]["source"]:
        try:
            check_source_url(cfg["data"]["source"])
        except SourceURLError as exc:
            raise ConfigError(f"data.source: {exc}") from None


def _with_defaults(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(defaults))
    for k, v in values.items():
        if isinstance(defaults.get(k), dict) and isinstance(v, dict):
            out[k] = _with_defaults(v, defaults[k])
        elif v is not None or k not in defaults:
            out[k] = v
    return out


def _check_modalities(cfg: dict[str, Any]) -> None:
    mods = cfg["modalities"]
    active = [m for m, on in mods["inputs"].items() if on]
    if not active:
        raise ConfigError("modalities.inputs: no input modality is enabled")
    channels = mods.get("inputs_channels") or {}
    for m in active:
        chans = channels.get(m)
        if chans is None:
            if MODALITIES[m].channels_required:
                # The reference's model sizes this encoder with len(inputs_channels[m]): without the
                # list it builds a 0-channel input (and its loader selects no band of a series).
                raise ConfigError(f"modalities.inputs_channels.{m}: required when {m} is enabled (1-based band list)")
            continue
        n_bands = MODALITIES[m].bands_per_date
        for i, c in enumerate(chans):
            if c > n_bands:
                raise ConfigError(
                    f"modalities.inputs_channels.{m}[{i}]: channel {c} does not exist ({m} has {n_bands} bands, 1-based)"
                )
    norm = mods["normalization"]
    if norm["norm_type"] == "custom":
        for m in active:
            if MODALITIES[m].time_series:
                continue  # the reference never normalises series
            means, stds = norm.get(f"{m}_means"), norm.get(f"{m}_stds")
            key = f"modalities.normalization.{m}_means"
            if means is None or stds is None:
                raise ConfigError(f"{key}: norm_type is custom but {m}_means / {m}_stds are missing")
            if len(means) != len(stds):
                raise ConfigError(f"{key}: {len(means)} means but {len(stds)} stds")
            needed = output_channels(cfg, m)
            if len(means) < needed:
                raise ConfigError(f"{key}: {len(means)} values for {needed} channels")
            if any(s == 0 for s in stds):
                raise ConfigError(f"modalities.normalization.{m}_stds: a standard deviation is 0")


def _check_labels(cfg: dict[str, Any]) -> None:
    for i, task in enumerate(cfg["labels"]):
        if task not in cfg["labels_configs"]:
            raise ConfigError(f"labels_configs.{task}: missing (listed in labels[{i}])")
    for task, conf in cfg["labels_configs"].items():  # unused tasks too: a typo there is still a typo
        names = conf["value_name"]
        if not names or any(isinstance(k, bool) or not isinstance(k, int) for k in names):
            raise ConfigError(f"labels_configs.{task}.value_name: expected a mapping of class index -> name")
        if sorted(names) != list(range(len(names))):
            raise ConfigError(f"labels_configs.{task}.value_name: class indices must be 0..{len(names) - 1}")
        ch = conf.get("label_channel_nomenclature", 1)
        bands = MODALITIES[task].bands_per_date
        if ch > bands:
            raise ConfigError(f"labels_configs.{task}.label_channel_nomenclature: {ch} > {bands} bands")
        if task == "ALL_LABEL-LPIS" and len(names) > LPIS_LEVEL_CLASS_COUNTS[ch - 1]:
            raise ConfigError(
                f"labels_configs.{task}.value_name: {len(names)} classes but LPIS band {ch} has "
                f"{LPIS_LEVEL_CLASS_COUNTS[ch - 1]}"
            )


def _check_select(cfg: dict[str, Any]) -> None:
    sel = cfg["data"]["select"]
    ids = sel.get("patch_ids")
    if ids is not None and not (isinstance(ids, str) or (isinstance(ids, list) and all(isinstance(x, str) for x in ids))):
        raise _fail("data.select.patch_ids", "a list of patch ids or a path to a text file", ids)
    for task, shares in (sel.get("min_class_share") or {}).items():
        for c, share in shares.items():
            key = f"data.select.min_class_share.{task}.{c}"
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise _fail(key, "an integer class index as key", c)
            is_number(0, 1)(share, key)


# --------------------------------------------------------------------------------------------
# Derived facts the loader and the model both need
# --------------------------------------------------------------------------------------------
def active_inputs(cfg: Mapping[str, Any]) -> list[str]:
    """Enabled input modalities, in the schema's order."""
    inputs = cfg["modalities"]["inputs"]
    return [m for m in INPUT_MODALITIES if inputs.get(m, False)]


def selected_channels(cfg: Mapping[str, Any], modality_name: str) -> list[int] | None:
    """1-based channels read for `modality_name`, or None for "all" (the reference's empty list).

    DEM_ELEV ignores `inputs_channels` in the reference (it always reads both bands).
    """
    if not MODALITIES[modality_name].selects_channels:
        return None
    chans = (cfg["modalities"].get("inputs_channels") or {}).get(modality_name)
    return list(chans) if chans else None


def output_channels(cfg: Mapping[str, Any], modality_name: str) -> int:
    """Channels of the preprocessed tensor of `modality_name` (what the model's encoder sees)."""
    mod = MODALITIES[modality_name]
    if mod.elevation:
        pre = cfg["modalities"]["pre_processings"]
        return mod.output_channels(calc_elevation=pre["calc_elevation"], stack_dsm=pre["calc_elevation_stack_dsm"])
    return mod.output_channels(selected_channels(cfg, modality_name))
