"""Mono-temporal branches: an smp/timm encoder per modality and an smp decoder per task.

Both are cut out of a full `segmentation_models_pytorch` model built exactly as the reference
builds it (same smp call, same fallback order: smp encoder name, then `tu-<name>` with `img_size`,
then `tu-<name>` without), so module nesting, parameter counts and state-dict keys
(`seg_model.<...>`, `seg_model.decoder.<...>`, `seg_model.segmentation_head.<...>`) match the
reference's. Pretrained weights (`encoder_weights`: `imagenet`, the reference's smp default, or a
local file) are loaded by smp / timm themselves, as when the reference builds the model
(`trainer.model.pretrained`); `copy_first/second/third` in `new_channels_init_mode` (ours) start
input channels beyond the pretrained RGB ones as copies of one of them.

A decoder's throw-away encoder (the reference builds a whole model then keeps the decoder) is
built on the meta device, so it costs no memory or init time; the decoder is then materialised
and initialised as smp initialises it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import initialization as smp_init
from torch import Tensor, nn

from trainer.config import ConfigError

from .pretrained import KEY, library_pretrained_encoder, resolve
from .weights_io import read_state_dict

DECODER_IMG_SIZE = 512
"""`img_size` of the reference's decoder builds (its default): only its unused encoder sees it."""


def create_smp_model(
    arch: str, encoder: str, in_channels: int, classes: int, img_size: int, **extra: Any
) -> nn.Module:
    """Build the full smp model the way the reference does, never downloading weights."""
    common = dict(arch=arch, classes=classes, in_channels=in_channels, encoder_weights=None, **extra)
    try:
        return smp.create_model(encoder_name=encoder, img_size=img_size, **common)
    except (KeyError, TypeError):
        try:
            return smp.create_model(encoder_name="tu-" + encoder, img_size=img_size, **common)
        except TypeError:
            return smp.create_model(encoder_name="tu-" + encoder, **common)


class MonotempEncoder(nn.Module):
    """The encoder of one mono-temporal modality; `seg_model(x)` gives smp's feature list."""

    def __init__(
        self,
        arch: str,
        encoder: str,
        in_channels: int,
        img_size: int,
        classes: int,
        weights: str | None = None,
        new_channels_init_mode: str = "random",
    ) -> None:
        super().__init__()
        full = create_smp_model(arch, encoder, in_channels, classes, img_size)
        self.seg_model = full.encoder
        if weights is not None and torch.empty(0).device.type != "meta":  # meta: structure only, no values
            load_pretrained_encoder(self.seg_model, encoder, weights, in_channels, img_size, new_channels_init_mode)

    @property
    def out_channels(self) -> list[int]:
        return list(self.seg_model.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.seg_model(x)


class DecoderHead(nn.Module):
    """An smp decoder followed by its segmentation head (keys `decoder.*`, `segmentation_head.*`)."""

    def __init__(self, decoder: nn.Module, segmentation_head: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.segmentation_head = segmentation_head

    def forward(self, *features: Tensor) -> Tensor:
        return self.segmentation_head(self.decoder(*features))


class MonotempDecoder(nn.Module):
    """A task (or auxiliary) decoder: smp's decoder built for a 1-channel encoder, as in the reference."""

    def __init__(self, arch: str, encoder: str, classes: int) -> None:
        super().__init__()
        target = torch.empty(0).device  # honours an enclosing `with torch.device(...)`
        head = copy.deepcopy(_decoder_template(arch, encoder, classes))
        if target.type != "meta":
            head = _materialise(head, target)
            smp_init.initialize_decoder(head.decoder)
            smp_init.initialize_head(head.segmentation_head)
        self.seg_model = head

    def forward(self, *features: Tensor) -> Tensor:
        return self.seg_model(*features)


@functools.lru_cache(maxsize=16)
def _decoder_template(arch: str, encoder: str, classes: int) -> DecoderHead:
    """The decoder + head of the reference's 1-channel decoder build, on the meta device.

    Cached: a model has one decoder per task and auxiliary modality, all of the same structure,
    and building the throw-away encoder dominates the cost even on the meta device.
    """
    # Building consumes random numbers even on the meta device; fork the RNG so that a model's
    # initial weights depend on the seed alone, not on whether this cache was already warm.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        full = create_smp_model(arch, encoder, 1, classes, DECODER_IMG_SIZE)
    return DecoderHead(full.decoder, full.segmentation_head)


def _materialise(module: nn.Module, device: torch.device) -> nn.Module:
    """Allocate a meta-built module on `device` and run every layer's own initialiser."""
    module = module.to_empty(device=device)
    for sub in module.modules():
        owns_state = any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False))
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()  # also resets BatchNorm running statistics
        elif owns_state:
            raise TypeError(f"cannot initialise decoder layer {type(sub).__name__} built on the meta device")
    return module


# --------------------------------------------------------------------------------------------
# Pretrained encoder weights (`encoder_weights`: imagenet or a local file)
# --------------------------------------------------------------------------------------------
ENCODER_DEPTH = 5
"""smp's default `encoder_depth`, which the reference never changes."""
PREFIXES = ("module.", "backbone.", "encoder.")


class EncoderWeightsMismatch(ConfigError):
    """A weights file does not hold this encoder's tensors; the message names the missing ones."""


def load_pretrained_encoder(encoder: nn.Module, name: str, weights: str, in_channels: int, img_size: int,
                            new_channels_init_mode: str) -> None:
    """Fill `encoder` with pretrained weights as the reference's smp call would.

    `weights` is `imagenet` (smp's default, from the local cache or downloaded) or a file holding
    the backbone's state dict with timm's or smp's own key names (a leading `module.`,
    `backbone.` or `encoder.` is dropped; classifier keys are ignored). smp / timm load it and
    adapt the first convolution to `in_channels` as they do for the reference (timm: 1 channel =
    sum of the RGB filters, others = RGB repeated and scaled by 3/C; smp: likewise, cycled).
    With `copy_first/second/third` and more than 3 channels, the RGB filters are kept as they
    are and each extra channel starts as a copy of filter 1, 2 or 3 instead.
    """
    path = resolve(name, weights)
    state = _strip_prefixes(read_state_dict(path))
    target = encoder.state_dict()
    ours = new_channels_init_mode != "random" and in_channels > 3
    try:
        loaded = library_pretrained_encoder(name, state, 3 if ours else in_channels, ENCODER_DEPTH, img_size)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise EncoderWeightsMismatch(f"{KEY}: {path} does not fit the {name} encoder ({detail[:400]})") from None
    pretrained = loaded.state_dict()
    if ours:
        for key, tensor in pretrained.items():
            if tensor.shape != target[key].shape:
                pretrained[key] = adapt_first_conv(tensor, target[key], new_channels_init_mode)
    encoder.load_state_dict(pretrained, strict=True)


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def adapt_first_conv(pretrained: Tensor, current: Tensor, mode: str) -> Tensor:
    """A first-conv weight for `current.shape[1] > 3` channels: the pretrained RGB filters, then
    copies of filter 1, 2 or 3 (`copy_first/second/third`); `current`'s values elsewhere."""
    n_in, n_pre = current.shape[1], pretrained.shape[1]
    if n_in < n_pre:
        raise ValueError(f"adapt_first_conv: {n_in} channels is fewer than the pretrained {n_pre}")
    out = current.clone()
    out[:, :n_pre] = pretrained
    source = {"copy_first": 0, "copy_second": 1, "copy_third": 2}.get(mode)
    if source is not None:
        for c in range(n_pre, n_in):
            out[:, c] = pretrained[:, min(source, n_pre - 1)]
    return out
