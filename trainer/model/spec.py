"""What the model needs from the merged FLAIR-HUB config, read and checked once.

The model is built from the plain nested dict of the four reference YAML files
(`config_task`, `config_modalities`, `config_models`, `config_supervision`). This module reads
only the keys the model uses, checks each with an error that names the dotted key, and resolves
the reference's derived values (input channel counts, the U-TAE widths stretched to the
mono-temporal encoder's depth, the U-TAE output convolution extended to the total class count)
so the model code never touches the raw dict. `model_config_subset` gives back the exact keys
read, which is what our checkpoints store next to their weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from packer.schema import LABEL_MODALITIES, MODALITIES, MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS
from trainer.config import ConfigError  # the one config error type: flair-train reports it as one line

INPUT_KEYS: tuple[str, ...] = (*MONO_TEMPORAL_INPUTS, *TIME_SERIES_INPUTS)
"""Order of the branches (mono-temporal first): it fixes the fusion's concatenation order."""

NEW_CHANNELS_INIT_MODES = ("copy_first", "copy_second", "copy_third", "random")
AGG_MODES = ("att_group", "att_mean", "mean")
ENCODER_NORMS = ("group", "batch", "instance", "none")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

MULTITEMP_KEYS = (
    "encoder_widths", "decoder_widths", "out_conv", "str_conv_k", "str_conv_s", "str_conv_p",
    "agg_mode", "encoder_norm", "n_head", "d_model", "d_k", "pad_value", "padding_mode",
)


def _get(config: Mapping[str, Any], dotted: str, default: Any = ...) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not ...:
                return default
            raise ConfigError(f"config key '{dotted}' is missing")
        node = node[part]
    return node


def _bool(value: Any, key: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    return value


def _int(value: Any, key: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value}")
    return value


def _int_list(value: Any, key: str, minimum: int = 1) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"config key '{key}' must be a non-empty list of integers, got {value!r}")
    return [_int(v, f"{key}[{i}]", minimum) for i, v in enumerate(value)]


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {value!r}")
    return value


def _per_modality(config: Mapping[str, Any], dotted: str, required: bool) -> dict[str, Any]:
    """A `{MODALITY: value}` block; unknown modality names are an error (typos would be silent)."""
    block = _get(config, dotted, ... if required else None)
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"config key '{dotted}' must be a mapping of modality names")
    for name in block:
        if name not in INPUT_KEYS:
            raise ConfigError(f"config key '{dotted}.{name}': unknown input modality; expected one of {', '.join(INPUT_KEYS)}")
    return dict(block)


@dataclass(frozen=True)
class UTAESpec:
    """U-TAE hyper-parameters after the reference's adjustments (see `ModelSpec.from_config`)."""

    encoder_widths: tuple[int, ...]
    decoder_widths: tuple[int, ...]
    out_conv: tuple[int, ...]
    str_conv_k: int
    str_conv_s: int
    str_conv_p: int
    agg_mode: str
    encoder_norm: str
    n_head: int
    d_model: int
    d_k: int
    pad_value: float
    padding_mode: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything the FLAIR-UPerFuse constructor needs, already validated."""

    mono: tuple[str, ...]  # enabled mono-temporal inputs, in branch order
    multi: tuple[str, ...]  # enabled time series, in branch order
    in_channels: dict[str, int]
    input_sizes: dict[str, int]
    aux: tuple[str, ...]  # enabled inputs with an auxiliary decoder
    modality_dropout: dict[str, float]
    tasks: tuple[str, ...]
    n_classes: dict[str, int]
    encoder_name: str
    decoder_name: str
    encoder_weights: str | None
    new_channels_init_mode: str
    utae: UTAESpec | None  # configured widths until `with_utae` resolves them

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.mono, *self.multi)

    @property
    def total_classes(self) -> int:
        """Channels of the U-TAE logits: the classes of all tasks stacked (reference semantics)."""
        return sum(self.n_classes.values())

    @classmethod
    def from_config(cls, config: Mapping[str, Any], input_sizes: Mapping[str, int] | None = None) -> "ModelSpec":
        """Read and check the model keys of a merged FLAIR-HUB config.

        `input_sizes` overrides the per-modality patch size (pixels); by default the dataset's
        sizes from `packer.schema` (512 aerial and DEM, 256 historical, 64 SPOT, 10 Sentinel).
        Only Swin-like encoders depend on it (window sizes shrink for small inputs).
        """
        inputs = _per_modality(config, "modalities.inputs", required=True)
        enabled = {m: _bool(inputs.get(m), f"modalities.inputs.{m}") for m in INPUT_KEYS}
        mono = tuple(m for m in MONO_TEMPORAL_INPUTS if enabled[m])
        multi = tuple(m for m in TIME_SERIES_INPUTS if enabled[m])
        if not mono and not multi:
            raise ConfigError("config key 'modalities.inputs': no input modality is enabled")

        in_channels = {m: _input_channels(config, m) for m in (*mono, *multi)}
        sizes = {m: MODALITIES[m].size_px for m in (*mono, *multi)}
        for m, size in (input_sizes or {}).items():
            if m in sizes:
                sizes[m] = _int(size, f"input_sizes.{m}", 1)

        aux_block = _per_modality(config, "modalities.aux_loss", required=False)
        aux = tuple(m for m in (*mono, *multi) if _bool(aux_block.get(m), f"modalities.aux_loss.{m}"))

        dropout_block = _per_modality(config, "modalities.modality_dropout", required=False)
        dropout = {}
        for m in (*mono, *multi):
            p = dropout_block.get(m, 0) or 0
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ConfigError(f"config key 'modalities.modality_dropout.{m}' must be a number in [0, 1], got {p!r}")
            dropout[m] = float(p)

        tasks, n_classes = _tasks(config)

        arch = _get(config, "models.monotemp_model.arch")
        parts = arch.split("-") if isinstance(arch, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"config key 'models.monotemp_model.arch' must be '<encoder>-<decoder>' "
                f"(e.g. swin_base_patch4_window12_384-upernet), got {arch!r}"
            )
        weights = _get(config, "models.monotemp_model.encoder_weights", None)
        if weights is not None and not isinstance(weights, str):
            raise ConfigError(f"config key 'models.monotemp_model.encoder_weights' must be null, 'imagenet' or a file path, got {weights!r}")
        init_mode = _choice(
            _get(config, "models.monotemp_model.new_channels_init_mode", "random"),
            "models.monotemp_model.new_channels_init_mode", NEW_CHANNELS_INIT_MODES,
        )

        utae = _utae_spec(config, sum(n_classes.values())) if multi else None
        return cls(
            mono=mono, multi=multi, in_channels=in_channels, input_sizes=sizes, aux=aux,
            modality_dropout=dropout, tasks=tasks, n_classes=n_classes,
            encoder_name=parts[0], decoder_name=parts[1], encoder_weights=weights,
            new_channels_init_mode=init_mode, utae=utae,
        )

    def with_utae(self, mono_out_channels: list[int] | None) -> "ModelSpec":
        """Resolve the U-TAE widths once the first mono-temporal encoder's channels are known.

        Reference behaviour kept for parameter and checkpoint parity: with a mono-temporal
        branch, both width lists are replaced by as many powers of two as that encoder has
        (non-dummy) stages, spread between the configured min and max encoder width.
        """
        if self.utae is None or mono_out_channels is None:
            return self
        widths = tuple(stretched_widths(list(self.utae.encoder_widths), strip_dummy_stages(mono_out_channels)))
        return replace(self, utae=replace(self.utae, encoder_widths=widths, decoder_widths=widths))


def _utae_spec(config: Mapping[str, Any], total_classes: int) -> UTAESpec:
    """Check `models.multitemp_model`; the output convolution gets the total class count
    appended when its last width differs (reference rule: U-TAE logits carry every task)."""
    key = "models.multitemp_model"
    raw = {k: copy.deepcopy(_get(config, f"{key}.{k}")) for k in MULTITEMP_KEYS}
    enc = _int_list(raw["encoder_widths"], f"{key}.encoder_widths", 2)
    dec = _int_list(raw["decoder_widths"], f"{key}.decoder_widths", 1)
    if len(enc) != len(dec):
        raise ConfigError(f"config keys '{key}.encoder_widths' and '{key}.decoder_widths' must have the same length")
    if enc[-1] != dec[-1]:
        raise ConfigError(f"config keys '{key}.encoder_widths' and '{key}.decoder_widths' must end with the same width")
    out_conv = _int_list(raw["out_conv"], f"{key}.out_conv", 1)
    if out_conv[-1] != total_classes:
        out_conv.append(total_classes)
    n_head = _int(raw["n_head"], f"{key}.n_head", 1)
    d_model = _int(raw["d_model"], f"{key}.d_model", 1)
    if d_model % n_head:
        raise ConfigError(f"config key '{key}.d_model' ({d_model}) must be a multiple of n_head ({n_head})")
    if any(w % n_head for w in enc):
        # Group attention and the L-TAE norms split channels into one group per head.
        raise ConfigError(f"config key '{key}.encoder_widths': widths must be multiples of n_head ({n_head})")
    pad_value = raw["pad_value"]
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
        raise ConfigError(f"config key '{key}.pad_value' must be a number, got {pad_value!r}")
    return UTAESpec(
        encoder_widths=tuple(enc), decoder_widths=tuple(dec), out_conv=tuple(out_conv),
        str_conv_k=_int(raw["str_conv_k"], f"{key}.str_conv_k", 1),
        str_conv_s=_int(raw["str_conv_s"], f"{key}.str_conv_s", 1),
        str_conv_p=_int(raw["str_conv_p"], f"{key}.str_conv_p", 0),
        agg_mode=_choice(raw["agg_mode"], f"{key}.agg_mode", AGG_MODES),
        encoder_norm=_choice(str(raw["encoder_norm"]).lower(), f"{key}.encoder_norm", ENCODER_NORMS),
        n_head=n_head, d_model=d_model, d_k=_int(raw["d_k"], f"{key}.d_k", 1),
        pad_value=float(pad_value),
        padding_mode=_choice(raw["padding_mode"], f"{key}.padding_mode", PADDING_MODES),
    )


def _input_channels(config: Mapping[str, Any], name: str) -> int:
    """Input channels of one branch, as the reference derives them."""
    mod = MODALITIES[name]
    if mod.elevation:
        calc = _bool(_get(config, "modalities.pre_processings.calc_elevation"), "modalities.pre_processings.calc_elevation")
        stack = _bool(
            _get(config, "modalities.pre_processings.calc_elevation_stack_dsm"),
            "modalities.pre_processings.calc_elevation_stack_dsm",
        )
        return mod.output_channels(calc_elevation=calc, stack_dsm=stack)
    if not mod.channels_required:
        return mod.bands_per_date  # PAN: its one band, whatever `inputs_channels` says
    key = f"modalities.inputs_channels.{name}"
    channels = _int_list(_get(config, key), key, 1)
    bands = MODALITIES[name].bands_per_date
    for i, c in enumerate(channels):
        if c > bands:
            raise ConfigError(f"config key '{key}[{i}]' = {c}: {name} has {bands} bands (channels start at 1)")
    return len(channels)


def _tasks(config: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, int]]:
    labels = _get(config, "labels")
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, (list, tuple)) or not labels:
        raise ConfigError("config key 'labels' must be a non-empty list of label modalities")
    n_classes = {}
    for task in labels:
        if task not in LABEL_MODALITIES:
            raise ConfigError(f"config key 'labels': unknown task {task!r}; expected one of {', '.join(LABEL_MODALITIES)}")
        if task in n_classes:
            raise ConfigError(f"config key 'labels': task {task!r} is listed twice")
        key = f"labels_configs.{task}.value_name"
        names = _get(config, key)
        if not isinstance(names, (Mapping, list, tuple)) or not names:
            raise ConfigError(f"config key '{key}' must be a non-empty mapping of class index to name")
        n_classes[task] = len(names)
    return tuple(labels), n_classes


def strip_dummy_stages(out_channels: list[int]) -> list[int]:
    """Drop smp's leading (input, dummy) stages of transformer-style encoders (a 0-channel stage)."""
    if len(out_channels) > 2 and (out_channels[0] == 0 or out_channels[1] == 0):
        return list(out_channels[2:])
    return list(out_channels)


def stretched_widths(encoder_widths: list[int], mono_stages: list[int]) -> list[int]:
    """`len(mono_stages)` powers of two spread over [min-1, max+1] of `encoder_widths` (reference rule)."""
    spread = np.linspace(min(encoder_widths) - 1, max(encoder_widths) + 1, len(mono_stages)).astype(int)
    return [2 ** round(math.log(int(v), 2)) for v in spread]


def model_config_subset(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys `ModelSpec.from_config` reads, copied: enough to rebuild the same model."""
    out: dict[str, Any] = {"modalities": {}, "models": {}, "labels": copy.deepcopy(_get(config, "labels"))}
    mods = _get(config, "modalities")
    for key in ("inputs", "inputs_channels", "aux_loss", "modality_dropout"):
        if key in mods:
            out["modalities"][key] = copy.deepcopy(mods[key])
    pre = mods.get("pre_processings") or {}
    out["modalities"]["pre_processings"] = {
        k: pre[k] for k in ("calc_elevation", "calc_elevation_stack_dsm") if k in pre
    }
    models = _get(config, "models")
    out["models"]["monotemp_model"] = copy.deepcopy(dict(models.get("monotemp_model") or {}))
    if "multitemp_model" in models:
        out["models"]["multitemp_model"] = copy.deepcopy(dict(models["multitemp_model"]))
    labels = out["labels"] if isinstance(out["labels"], (list, tuple)) else [out["labels"]]
    out["labels_configs"] = {
        t: {"value_name": {str(k): v for k, v in _value_names(config, t).items()}} for t in labels
    }
    return out


def _value_names(config: Mapping[str, Any], task: str) -> dict[Any, Any]:
    names = _get(config, f"labels_configs.{task}.value_name")
    return dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
