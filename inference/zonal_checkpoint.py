"""The zonal config against the checkpoint's training config: fill what is missing, refuse contradictions.

A checkpoint written by `flair-train` carries the config it was trained with (`train_config_yaml`
in `best_model.json`); a reference checkpoint may be given its training config with the zonal
key `model_config`. Either way, the zonal preprocessing keys are reconciled with it, key by key:

- a zonal key the user did not write takes the training value (the preprocessing the model saw,
  as `flair-infer` does);
- a zonal key the user wrote with another value is refused with one line naming the key and both
  values, unless the key is listed in `checkpoint_overrides` (the user's explicit "my raster is
  different, use my value"), in which case the user's value is kept and logged;
- a few differences cannot be overridden because the weights could not be used at all: the set of
  inputs, the architecture, a task the model does not predict, another class count.

Keys compared (zonal <-> training config): `monotemp_arch` <-> `models.monotemp_model.arch`,
`multitemp_model_ref_date` <-> `models.multitemp_model.ref_date`, per input
`channels` <-> `modalities.inputs_channels`, `normalization` <-> `modalities.normalization`,
DEM `calc_elevation(_stack_dsm)`, Sentinel-2 `filter_clouds` and its thresholds, series
`temporal_average` / `average_period` <-> `pre_processings`, and per task `class_names` and
`label_channel_nomenclature` <-> `labels_configs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from packer.schema import MODALITIES
from trainer import ConfigError, read_config_layers

FIXED = "cannot be overridden"


@dataclass(frozen=True)
class TrainingConfig:
    """What is known of the checkpoint's training: the model keys always, the whole config when stored."""

    source: str
    model: Mapping[str, Any]  # modalities.inputs / inputs_channels / pre_processings (DEM), models, labels
    full: Mapping[str, Any] | None  # the whole training config (normalisation, filters, averages)


def training_config_of(weights: str | Path, model_config: str | None) -> TrainingConfig | None:
    """The training config of `weights`: stored with our checkpoints, or the zonal `model_config`."""
    from inference.model_io import our_checkpoint_config

    try:
        document = our_checkpoint_config(weights)
    except Exception:  # an unreadable or foreign file: the loader reports it when the model is loaded
        document = None
    if document is not None:
        full = yaml.safe_load(document["train_config_yaml"]) if document.get("train_config_yaml") else None
        return TrainingConfig(f"the checkpoint {Path(weights).name}", document["config"], full)
    if model_config:
        full = read_config_layers([model_config])
        return TrainingConfig(f"model_config {Path(model_config).name}", full, full)
    return None


def _get(cfg: Mapping[str, Any] | None, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _given(raw: Mapping[str, Any], dotted: str) -> bool:
    """True when the user's zonal file sets `dotted` (to anything but null)."""
    return _get(raw, dotted) is not None


def _average(block: Mapping[str, Any]) -> Any:
    return (block.get("average_period") or "monthly") if block.get("temporal_average") else False


def _channels(value: Any) -> list[int] | None:
    return list(value) if value else None


class _Reconciler:
    def __init__(self, raw: Mapping[str, Any], cfg: dict[str, Any], train: TrainingConfig) -> None:
        self.raw, self.cfg, self.train = raw, cfg, train
        self.overrides = set(cfg.get("checkpoint_overrides") or ())
        self.taken: list[str] = []
        self.kept: list[str] = []
        self.seen: set[str] = set()

    def key(self, dotted: str, ours: Any, theirs: Any, given: bool, apply: Callable[[Any], None],
            fixed: bool = False, required: bool = False) -> None:
        """Reconcile one key: `ours` (zonal, after defaults) against `theirs` (training)."""
        self.seen.add(dotted)
        if theirs is None or ours == theirs:
            return
        if not given:
            apply(theirs)
            self.taken.append(dotted)
            return
        mine, trained = _difference(ours, theirs)
        if fixed:
            raise ConfigError(f"{dotted}: {mine} in the zonal config but {self.train.source} was trained with "
                              f"{trained} ({FIXED}: the weights fit only their own)")
        if dotted in self.overrides:
            self.kept.append(dotted)
            return
        way = "" if required else "remove the key to use the training value, or "
        raise ConfigError(f"{dotted}: {mine} in the zonal config but {self.train.source} was trained with {trained} "
                          f"({way}list {dotted} in checkpoint_overrides to keep yours)")


def _difference(ours: Any, theirs: Any) -> tuple[str, str]:
    """Both values for a message; for two mappings, only the entries that differ."""
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping) and len(ours) == len(theirs) > 3:
        keys = [k for k in theirs if ours.get(k) != theirs[k]][:3]
        return (", ".join(f"{k}: {ours.get(k)!r}" for k in keys), ", ".join(f"{k}: {theirs[k]!r}" for k in keys))
    return repr(ours), repr(theirs)


def reconcile_with_checkpoint(raw: Mapping[str, Any], cfg: dict[str, Any], train: TrainingConfig | None) -> dict[str, Any]:
    """`cfg` (validated zonal config) with the training values filled in; raises `ConfigError` on a contradiction."""
    if train is None:
        return cfg
    for key in cfg.get("checkpoint_overrides") or ():
        if key in ("monotemp_arch", "modalities.inputs"):
            raise ConfigError(f"checkpoint_overrides: {key} {FIXED} (the weights fit only their own)")
    r = _Reconciler(raw, cfg, train)
    model, full = train.model, train.full
    from inference.model_io import check_zonal_model

    check_zonal_model(cfg, model, train.source)

    r.key("monotemp_arch", cfg["monotemp_arch"], _get(model, "models.monotemp_model.arch"),
          _given(raw, "monotemp_arch"), lambda v: cfg.__setitem__("monotemp_arch", v), fixed=True)
    r.key("multitemp_model_ref_date", cfg["multitemp_model_ref_date"], _get(model, "models.multitemp_model.ref_date"),
          _given(raw, "multitemp_model_ref_date"), lambda v: cfg.__setitem__("multitemp_model_ref_date", v))

    mods = cfg["modalities"]
    pre_model = _get(model, "modalities.pre_processings") or {}
    pre_full = _get(full, "modalities.pre_processings") or {}
    for m in (m for m, on in mods["inputs"].items() if on):
        block, rawb, key = mods[m], _get(raw, f"modalities.{m}") or {}, f"modalities.{m}"
        mod = MODALITIES[m]
        if mod.channels_required:
            r.key(f"{key}.channels", _channels(block.get("channels")),
                  _channels(_get(model, f"modalities.inputs_channels.{m}")), rawb.get("channels") is not None,
                  lambda v, b=block: b.__setitem__("channels", v))
        if mod.elevation:
            for k in ("calc_elevation", "calc_elevation_stack_dsm"):
                r.key(f"{key}.{k}", bool(block.get(k)), pre_model.get(k, pre_full.get(k)), rawb.get(k) is not None,
                      lambda v, b=block, k=k: b.__setitem__(k, v))
        if not mod.time_series and full is not None:
            _normalization(r, m, block, rawb, full)
        if mod.time_series and full is not None:
            theirs = pre_full.get(mod.temporal_average_key, False) or False

            def set_average(v: Any, b: dict = block) -> None:
                b["temporal_average"] = bool(v)
                if v:
                    b["average_period"] = v

            r.key(f"{key}.temporal_average", _average(block), theirs,
                  rawb.get("temporal_average") is not None or rawb.get("average_period") is not None, set_average)
        if mod.mask and full is not None:
            _cloud_filter(r, block, rawb, pre_full, key)

    _tasks(r, cfg, raw, model, full)
    unknown = sorted(r.overrides - r.seen)
    if unknown:
        raise ConfigError(f"checkpoint_overrides: {', '.join(unknown)} is not a key compared with the training config "
                          f"(compared here: {', '.join(sorted(r.seen))})")
    # Logged by run_zonal once the run's log file exists (the config is read before it).
    cfg["checkpoint_notes"] = []
    if r.taken:
        cfg["checkpoint_notes"].append(f"from {train.source} (not set in the zonal config): {', '.join(r.taken)}")
    if r.kept:
        cfg["checkpoint_notes"].append(f"checkpoint_overrides: the zonal values of {', '.join(r.kept)} differ from "
                                       f"{train.source}'s training and are used as written")
    return cfg


def _normalization(r: _Reconciler, m: str, block: dict[str, Any], rawb: Mapping[str, Any], full: Mapping[str, Any]) -> None:
    norm = _get(full, "modalities.normalization") or {}
    kind = norm.get("norm_type")
    if kind is None:
        return
    n = _input_count(m, block)
    theirs: dict[str, Any] = {"type": kind}
    if kind == "custom":
        theirs["means"] = list(norm.get(f"{m}_means") or [])[:n]
        theirs["stds"] = list(norm.get(f"{m}_stds") or [])[:n]
    mine = dict(block.get("normalization") or {"type": "without"})
    ours = {"type": mine.get("type")}
    if ours["type"] == "custom":
        ours["means"] = list(mine.get("means") or [])[:n]
        ours["stds"] = list(mine.get("stds") or [])[:n]
    r.key(f"modalities.{m}.normalization", ours, theirs, rawb.get("normalization") is not None,
          lambda v, b=block: b.__setitem__("normalization", dict(v)))


def _input_count(m: str, block: Mapping[str, Any]) -> int:
    from inference.zonal_config import input_channel_count

    return input_channel_count(m, block)


def _cloud_filter(r: _Reconciler, block: dict[str, Any], rawb: Mapping[str, Any], pre: Mapping[str, Any], key: str) -> None:
    r.key(f"{key}.filter_clouds", bool(block.get("filter_clouds")), bool(pre.get("filter_sentinel2", False)),
          rawb.get("filter_clouds") is not None, lambda v: block.__setitem__("filter_clouds", v))
    if block.get("filter_clouds"):
        if not block.get("filter_clouds_img_path"):
            raise ConfigError(f"{key}.filter_clouds_img_path: required: {r.train.source} was trained with "
                              f"filter_sentinel2: True (give the MSK-SC raster, or set {key}.filter_clouds: False "
                              f"and list {key}.filter_clouds in checkpoint_overrides)")
        for ours, theirs, default in (("filter_max_cloud", "filter_sentinel2_max_cloud", 1),
                                      ("filter_max_snow", "filter_sentinel2_max_snow", 1),
                                      ("filter_max_frac_cover", "filter_sentinel2_max_frac_cover", 0.05)):
            r.key(f"{key}.{ours}", block.get(ours), pre.get(theirs, default), rawb.get(ours) is not None,
                  lambda v, k=ours: block.__setitem__(k, v))


def _tasks(r: _Reconciler, cfg: dict[str, Any], raw: Mapping[str, Any], model: Mapping[str, Any],
           full: Mapping[str, Any] | None) -> None:
    raw_tasks = raw.get("tasks") or []
    for i, task in enumerate(cfg["tasks"]):
        if not task["active"]:
            continue
        name, key = task["name"], f"tasks[{i}]"
        trained = _get(model, f"labels_configs.{name}.value_name")
        if trained:
            names = trained if isinstance(trained, Mapping) else dict(enumerate(trained))
            theirs = {int(k): str(v) for k, v in names.items()}
            if len(theirs) != len(task["class_names"]):
                raise ConfigError(f"{key}.class_names: {len(task['class_names'])} classes in the zonal config but "
                                  f"{r.train.source} predicts {len(theirs)} ({FIXED})")
            r.key(f"{key}.class_names", task["class_names"], dict(sorted(theirs.items())), True,
                  lambda v: None, required=True)
        level = _get(full, f"labels_configs.{name}.label_channel_nomenclature",
                     _get(model, f"labels_configs.{name}.label_channel_nomenclature"))
        given = i < len(raw_tasks) and isinstance(raw_tasks[i], Mapping) and raw_tasks[i].get("label_channel_nomenclature") is not None
        r.key(f"{key}.label_channel_nomenclature", task.get("label_channel_nomenclature", 1),
              None if level is None else int(level), given, lambda v, t=task: t.__setitem__("label_channel_nomenclature", v))
