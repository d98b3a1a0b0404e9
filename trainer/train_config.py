"""The training run's configuration: reference YAMLs + overlays + `--set` overrides + a `train:` section.

`load_train_config(paths, overrides)` reads each path in order (a directory = every `*.yaml` in
it, merged by top-level key as the reference does; a file = one YAML document) and deep-merges
them, later ones winning key by key, so a seed configuration is a short overlay on the full
FLAIR-HUB config. An overlay may name its base with `extends: <path relative to the overlay>`,
which makes `--config configs/seed/LC-A.yaml` self-contained. `--set a.b.c=value` overrides come
last (values parsed as YAML).

Everything except our `train:` section is validated by `trainer.config.validate_config` (the
reference keys and the `data:` section); `train:` is validated here. The returned dict is the
validated reference-shaped config with `train` filled with its defaults.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from trainer.config import (  # noqa: F401  (deep_merge, read_config_layers: re-exported for callers)
    ConfigError, deep_merge, is_bool, is_int, is_number, mapping, one_of, optional, read_config_layers, validate_config,
)

MIXED_PRECISION = ("no", "bf16", "fp16")

TRAIN_DEFAULTS: dict[str, Any] = {
    "mixed_precision": "no",
    "gradient_accumulation_steps": 1,
    "max_grad_norm": None,
    "val_every_n_steps": None,
    "limit_val_batches": None,
    "checkpoint_every_n_steps": None,
    "stop_after_steps": None,
    "find_unused_parameters": "auto",
    "deterministic": False,
    "tensorboard": True,
    "tensorboard_images": 4,
    "report": True,
    "log_samples": False,
    "reference_semantics": False,
}
"""What each key does: docs/training.md ("The `train:` section")."""


def _unused(v: Any, key: str) -> Any:
    if v == "auto" or isinstance(v, bool):
        return v
    raise ConfigError(f"{key}: expected 'auto', True or False, got {v!r}")


TRAIN_SCHEMA = mapping({
    "mixed_precision": one_of(*MIXED_PRECISION),
    "gradient_accumulation_steps": is_int(1),
    "max_grad_norm": optional(is_number(0)),
    "val_every_n_steps": optional(is_int(1)),
    "limit_val_batches": optional(is_int(1)),
    "checkpoint_every_n_steps": optional(is_int(1)),
    "stop_after_steps": optional(is_int(1)),
    "find_unused_parameters": _unused,
    "deterministic": is_bool,
    "tensorboard": is_bool,
    "tensorboard_images": is_int(0, 64),
    "report": is_bool,
    "log_samples": is_bool,
    "reference_semantics": is_bool,
})

TRAIN_REQUIRED_SECTIONS = ("paths", "tasks", "hyperparams", "saving")
MONITOR_BASES = ("val_loss", "val_miou", "val_oa", "val_wiou", "val_mf1", "train_loss")


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` strings (values parsed as YAML: `3`, `1e-4`, `true`, `[1,2]`, `null`)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. hyperparams.num_epochs=2")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key part")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            k: Any = _key(node, part)
            if not isinstance(node.get(k), dict):
                if k in node and node[k] is not None:
                    raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
                node[k] = {}
            node = node[k]
        node[_key(node, parts[-1])] = value
    return out


def _key(node: Mapping[Any, Any], part: str) -> Any:
    """YAML mappings may have integer keys (class indices): `--set ...default_exceptions.3=0`."""
    if part not in node and part.lstrip("-").isdigit():
        return int(part)
    return part


def validate_train_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a merged config for training; returns it with `data` and `train` defaults filled."""
    cfg = dict(cfg)
    train = cfg.pop("train", None)
    for section in TRAIN_REQUIRED_SECTIONS:
        if section not in cfg:
            raise ConfigError(f"{section}: missing section (expected in config_task.yaml)")
    out = validate_config(cfg, require_data=True)
    checked = TRAIN_SCHEMA(train or {}, "train")
    out["train"] = {**TRAIN_DEFAULTS, **{k: v for k, v in checked.items()}}
    _check_relations(out)
    return out


def monitor_names(cfg: Mapping[str, Any]) -> list[str]:
    """Metric names `saving.ckpt_monitor` may take: the averages and their per-task versions
    (with `train.reference_semantics`, the reference's logged names)."""
    if (cfg.get("train") or {}).get("reference_semantics"):
        from trainer.reference_semantics import monitor_names as reference_names

        return reference_names(cfg)
    names = list(MONITOR_BASES)
    for task in cfg["labels"]:
        suffix = task_suffix(task)
        names += [f"{b}_{suffix}" for b in ("val_miou", "val_oa", "val_wiou", "val_mf1")]
    return names


def task_suffix(task: str) -> str:
    """Short task name in metric keys, as the reference logs them (`AERIAL_LABEL-COSIA` -> `COSIA`)."""
    return task.split("-")[-1]


def _check_relations(cfg: Mapping[str, Any]) -> None:
    hp, saving, tasks = cfg["hyperparams"], cfg["saving"], cfg["tasks"]
    for key in ("num_epochs", "learning_rate", "optimizer"):
        if key not in hp:
            raise ConfigError(f"hyperparams.{key}: missing required key")
    sched = hp.get("scheduler")
    if sched in ("one_cycle_lr", "cycle_then_plateau") and "warmup_fraction" not in hp:
        raise ConfigError(f"hyperparams.warmup_fraction: missing (needed by scheduler {sched})")
    monitor = saving.get("ckpt_monitor", "val_miou")
    if monitor not in monitor_names(cfg):
        raise ConfigError(f"saving.ckpt_monitor: unknown metric {monitor!r} (expected one of: {', '.join(monitor_names(cfg))})")
    if tasks.get("train") is False:
        raise ConfigError("tasks.train: False: flair-train only trains; predict with flair-infer --checkpoint CKPT "
                          "--data SHARDS --split test --out DIR, or score existing predictions with flair-infer "
                          "--metrics-only --pred DIR --data SHARDS")
    tt = tasks.get("train_tasks") or {}
    if tt.get("resume_training_from_ckpt") and tt.get("init_weights_only_from_ckpt"):
        raise ConfigError("tasks.train_tasks: resume_training_from_ckpt and init_weights_only_from_ckpt are exclusive")
    if (tt.get("resume_training_from_ckpt") or tt.get("init_weights_only_from_ckpt")) and not cfg["paths"].get("ckpt_model_path"):
        raise ConfigError("paths.ckpt_model_path: missing (needed to resume or to initialise weights from a checkpoint)")
    if not cfg["paths"].get("out_folder"):
        raise ConfigError("paths.out_folder: missing (where checkpoints, logs and the report go)")


def load_train_config(paths: Sequence[str | Path], overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read layers, apply `--set` overrides, validate: the config a training run uses."""
    return validate_train_config(apply_overrides(read_config_layers(paths), overrides))


def dump_config(cfg: Mapping[str, Any]) -> str:
    """The exact config used, as YAML (saved in checkpoints and the report)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, allow_unicode=True)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
