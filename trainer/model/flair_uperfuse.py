"""FLAIR-UPerFuse: the FLAIR-HUB multimodal, multitask segmentation model.

Structure (module names = the reference's state-dict keys, so its checkpoints load unchanged):

- `encoders[<MODALITY>]`: per enabled mono-temporal input an smp/timm encoder
  (`encoders.AERIAL_RGBI.seg_model.*`), per enabled series a U-TAE (`encoders.SENTINEL2_TS.*`);
- `fusion_handler.conv_f[i]`: 1x1 convolutions mixing the concatenated maps of all branches;
- `main_decoders[<TASK>]`: one decoder per task (`seg_model.decoder` + `seg_model.segmentation_head`),
  or a 1x1 convolution over the U-TAE logits when there is no mono-temporal branch;
- `aux_decoders[<MODALITY>__<TASK>]`: per modality with `aux_loss` on, a decoder on that branch
  alone (a 1x1 convolution over the U-TAE logits for a series).

Forward contract::

    out = model(batch, dates, pad_masks, out_size=None, modality_dropout=None)
    out.tasks[task]          # logits (B, n_classes(task), H, W), H = W = out_size
    out.aux[task][modality]  # auxiliary logits, same shape, for modalities with aux_loss on

- `batch[<MODALITY>]`: float tensors, mono-temporal `(B, C, H, W)`, series `(B, T, C, H, W)`
  padded along T with `models.multitemp_model.pad_value`. Other keys (labels, ids) are ignored.
- `dates[<SERIES MODALITY>]`: `(B, T)` day offsets to the reference date (any number dtype);
  when absent, the reference loader's batch key is used (`batch["SENTINEL2_DATES"]`, ...).
- `pad_masks[<SERIES MODALITY>]` (optional): `(B, T)` bool, True where a date is padding. When
  absent, a date is padding when all its values equal `pad_value` (the reference's rule).
- `out_size`: output side in pixels; default the label size of the first task (512).
- `modality_dropout`: replace dropped branches' feature maps by noise (probabilities from
  `modalities.modality_dropout`); default: on in training mode when any probability is > 0.

Behaviour kept from the reference for parity: the U-TAE widths follow the mono-temporal
encoder's depth, U-TAE logits carry all tasks' classes stacked, a series-only model with one task
returns the (averaged) U-TAE logits directly. Deliberate differences: modality dropout uses the
configured per-modality probabilities (the reference draws them uniformly at random and only uses
the config to switch it on), and padded dates are excluded from the L-TAE input normalisation.
`use_reference_semantics()` (`train.reference_semantics`) restores both reference behaviours.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from typing import Any, Mapping, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from packer.schema import MODALITIES, MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS
from packer.schema import batch_dates_key as reference_dates_key

from .fusion import FusionHandler
from .ltae import MaskedGroupNorm
from .monotemp import MonotempDecoder, MonotempEncoder
from .spec import ModelSpec, model_config_subset, strip_dummy_stages
from .utae import UTAE


class ModelOutput(NamedTuple):
    tasks: dict[str, Tensor]
    aux: dict[str, dict[str, Tensor]]


def aux_key(modality: str, task: str) -> str:
    return f"{modality}__{task}"


class FlairUPerFuse(nn.Module):
    def __init__(self, spec: ModelSpec, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.spec = spec
        # The model's own config (the keys it was built from) travels with saved weights.
        self.model_config = model_config_subset(config) if config is not None else None
        arch, enc_name = spec.decoder_name, spec.encoder_name

        self.encoders = nn.ModuleDict()
        for mod in spec.mono:
            self.encoders[mod] = MonotempEncoder(
                arch, enc_name, spec.in_channels[mod], spec.input_sizes[mod], spec.total_classes,
                weights=spec.encoder_weights, new_channels_init_mode=spec.new_channels_init_mode,
            )
        main_channels = self.encoders[spec.mono[0]].out_channels if spec.mono else None
        spec = self.spec = spec.with_utae(main_channels)
        for mod in spec.multi:
            assert spec.utae is not None
            self.encoders[mod] = UTAE(spec.in_channels[mod], spec.utae)

        if spec.mono:
            backbone_channels = self._fused_input_channels(spec)
            target_channels = list(main_channels)  # type: ignore[arg-type]
        else:
            backbone_channels, target_channels = [1], [1]  # the reference's placeholder conv
        self.fusion_handler = FusionHandler(backbone_channels, target_channels, MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS)

        self.main_decoders = nn.ModuleDict()
        for task in spec.tasks:
            self.main_decoders[task] = self._decoder(task, series_head=not spec.mono)
        self.aux_decoders = nn.ModuleDict()
        for task in spec.tasks:
            for mod in spec.aux:
                self.aux_decoders[aux_key(mod, task)] = self._decoder(task, series_head=mod in spec.multi)
        # None: our modality dropout; True / False: the reference's draw, on / off (`use_reference_semantics`).
        self.reference_dropout: bool | None = None

    def use_reference_semantics(self, dropout_on: bool) -> None:
        """Train as the reference does: its modality dropout draw (on when `dropout_on`: any
        configured probability > 0) and padded dates inside the L-TAE input GroupNorm."""
        self.reference_dropout = bool(dropout_on)
        for module in self.modules():
            if isinstance(module, MaskedGroupNorm):
                module.include_padding = True

    def _decoder(self, task: str, series_head: bool) -> nn.Module:
        n = self.spec.n_classes[task]
        if series_head:
            return nn.Conv2d(self.spec.total_classes, n, kernel_size=1)
        return MonotempDecoder(self.spec.decoder_name, self.spec.encoder_name, n)

    def _fused_input_channels(self, spec: ModelSpec) -> list[int]:
        """Concatenated channels per scale: every mono branch's stages plus every U-TAE's maps."""
        per_branch = [strip_dummy_stages(self.encoders[m].out_channels) for m in spec.mono]
        assert spec.utae is not None or not spec.multi
        for _ in spec.multi:
            per_branch.append(list(spec.utae.decoder_widths)[::-1])  # type: ignore[union-attr]
        return [sum(stage) for stage in zip(*per_branch)]

    # ----------------------------------------------------------------------------------------
    def forward(
        self,
        batch: Mapping[str, Tensor],
        dates: Mapping[str, Tensor] | None = None,
        pad_masks: Mapping[str, Tensor] | None = None,
        *,
        out_size: int | tuple[int, int] | None = None,
        modality_dropout: bool | None = None,
    ) -> ModelOutput:
        spec = self.spec
        size = _pair(out_size if out_size is not None else MODALITIES[spec.tasks[0]].size_px)
        dates, pad_masks = dates or {}, pad_masks or {}
        for mod in spec.inputs:
            if mod not in batch:
                raise KeyError(f"model input {mod!r} is missing from the batch (enabled in modalities.inputs)")

        fmaps: dict[str, Any] = {}
        series_logits: dict[str, Tensor] = {}
        aux: dict[str, dict[str, Tensor]] = {task: {} for task in spec.tasks}
        for mod in spec.mono:
            x = batch[mod]
            if x.dim() != 4:
                raise ValueError(f"{mod} must be (B, C, H, W), got shape {tuple(x.shape)}")
            fmaps[mod] = self.encoders[mod](x)
            for task in spec.tasks if mod in spec.aux else ():
                aux[task][mod] = _resize(self.aux_decoders[aux_key(mod, task)](*fmaps[mod]), size)
        for mod in spec.multi:
            days = dates.get(mod, batch.get(reference_dates_key(mod)))
            if days is None:
                raise KeyError(f"dates of {mod!r} are missing (needed by its U-TAE positional encoding)")
            logits, maps = self.encoders[mod](batch[mod], days, pad_masks.get(mod))
            series_logits[mod] = _resize(logits, size)
            fmaps[mod] = maps
            for task in spec.tasks if mod in spec.aux else ():
                aux[task][mod] = _resize(self.aux_decoders[aux_key(mod, task)](series_logits[mod]), size)

        if modality_dropout is None:
            on = self.reference_dropout if self.reference_dropout is not None else any(
                p > 0 for p in spec.modality_dropout.values())
            modality_dropout = self.training and on
        if modality_dropout and len(self.encoders) > 1:
            fmaps = self._drop_modalities(fmaps)

        tasks: dict[str, Tensor] = {}
        if spec.mono:
            fused = self.fusion_handler(fmaps, fmaps[spec.mono[0]])
            for task in spec.tasks:
                tasks[task] = _resize(self.main_decoders[task](*fused), size)
        else:
            fused = self.fusion_handler(series_logits, series_logits[spec.multi[0]])
            for task in spec.tasks:
                # Reference: with one task the U-TAE logits are the output (its 1x1 head is unused).
                tasks[task] = self.main_decoders[task](fused) if len(spec.tasks) > 1 else fused
        return ModelOutput(tasks, aux)

    def _drop_modalities(self, fmaps: dict[str, list[Tensor]]) -> dict[str, list[Tensor]]:
        """Per batch, replace each branch's maps by Xavier-uniform noise with its configured probability
        (the reference's draw instead after `use_reference_semantics`)."""
        dropped = (reference_dropout_draw(list(fmaps)) if self.reference_dropout is not None else
                   {mod for mod in fmaps if torch.rand(()).item() < self.spec.modality_dropout.get(mod, 0.0)})
        return {mod: [_xavier_noise(m) for m in maps] if mod in dropped else maps for mod, maps in fmaps.items()}

    # ----------------------------------------------------------------------------------------
    def summary_parameter_count(self) -> int:
        """Parameters as the reference's model summary counts them: encoders + decoders, no fusion."""
        parts = (self.encoders, self.main_decoders, self.aux_decoders)
        return sum(p.numel() for part in parts for p in part.parameters())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary_rows(self) -> list[tuple[str, str, str, int]]:
        """(module, architecture, role, parameters) rows in the reference summary's order."""
        spec = self.spec
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        rows = [(k, spec.encoder_name if k in spec.mono else "utae", "backbone", n(m)) for k, m in self.encoders.items()]
        for k, m in self.aux_decoders.items():
            rows.append((k, "utae" if k.split("__")[0] in spec.multi or not spec.mono else spec.decoder_name, "aux loss decoder", n(m)))
        for k, m in self.main_decoders.items():
            rows.append((k, spec.decoder_name if spec.mono else "utae", "task decoder", n(m)))
        return rows


def build_model(
    config: Mapping[str, Any], input_sizes: Mapping[str, int] | None = None, device: str | torch.device = "cpu",
    pretrained: bool = True,
) -> FlairUPerFuse:
    """Build FLAIR-UPerFuse from the merged FLAIR-HUB config dict (not modified).

    `device="meta"` builds the structure without allocating weights (parameter counting).
    `pretrained=False` ignores `models.monotemp_model.encoder_weights`: for a model whose weights
    come from a checkpoint next (inference, resume), loading ImageNet weights would be wasted.
    """
    spec = ModelSpec.from_config(config, input_sizes)
    if not pretrained:
        spec = replace(spec, encoder_weights=None)
    device = torch.device(device)
    # A device context intercepts every tensor op; skip it for the default (CPU) case.
    with contextlib.nullcontext() if device == torch.device("cpu") else device:
        return FlairUPerFuse(spec, config)


def reference_dropout_draw(modalities: list[str]) -> set[str]:
    """The reference's modality dropout draw (`FLAIR_HUB_Model.forward` / `modality_dropout`).

    A probability `random.uniform(0, 1)` per modality, then `torch.rand(1) < p` in the same
    order: every modality is dropped with probability 1/2 whatever the configured values.
    """
    probabilities = {mod: random.uniform(0, 1) for mod in modalities}
    return {mod for mod in modalities if torch.rand(1).item() < probabilities[mod]}


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _xavier_noise(x: Tensor) -> Tensor:
    noise = torch.empty_like(x)
    if noise.numel():
        nn.init.xavier_uniform_(noise)
    return noise
