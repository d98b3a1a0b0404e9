"""Mono-temporal branches: an smp/timm encoder per modality and an smp decoder per task.

Both are cut out of a full `segmentation_models_pytorch` model built exactly as the reference
builds it (same smp call, same fallback order: smp encoder name, then `tu-<name>` with `img_size`,
then `tu-<name>` without), so module nesting, parameter counts and state-dict keys
(`seg_model.<...>`, `seg_model.decoder.<...>`, `seg_model.segmentation_head.<...>`) match the
reference's. Differences, all about where weights come from: `encoder_weights` defaults to none
(no download), may name a local file, and `new_channels_init_mode` says how input channels beyond
the pretrained RGB ones start.

A decoder's throw-away encoder (the reference builds a whole model then keeps the decoder) is
built on the meta device, so it costs no memory or init time; the decoder is then materialised
and initialised as smp initialises it.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import initialization as smp_init
from torch import Tensor, nn

from .weights_io import read_state_dict
from .window_layout import BIAS_TABLE, resize_bias_table

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
        if weights is not None:
            load_pretrained_encoder(self.seg_model, encoder, weights, in_channels, new_channels_init_mode)

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
# Pretrained encoder weights (optional; never downloaded unless `encoder_weights: imagenet`)
# --------------------------------------------------------------------------------------------
def load_pretrained_encoder(
    encoder: nn.Module, name: str, weights: str, in_channels: int, new_channels_init_mode: str
) -> None:
    """Fill `encoder` from `weights`: 'imagenet' (timm/smp download) or a local checkpoint file.

    A local file holds the backbone's own state dict (timm or smp key names, classifier keys are
    ignored; `.safetensors`, or `.pth`/`.bin` read with `weights_only=True`). The first
    convolution is adapted to `in_channels`: pretrained channels are kept where they exist, and
    extra channels are copies of channel 1, 2 or 3 (`copy_first/second/third`) or stay random.
    Fewer channels keep the first ones (one channel: the RGB mean).
    """
    if weights == "imagenet":
        state = _download_imagenet_state(name)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"models.monotemp_model.encoder_weights: no such file {path}")
        state = read_state_dict(path)
    target = encoder.state_dict()
    mapped = _match_keys(state, target)
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise KeyError(
            f"encoder weights {weights}: {len(missing)} encoder tensors have no match, e.g. {missing[:5]}"
        )
    for key, tensor in list(mapped.items()):
        want = target[key]
        if tensor.shape == want.shape:
            continue
        if tensor.dim() == 4 and tensor.shape[0] == want.shape[0] and tensor.shape[2:] == want.shape[2:]:
            mapped[key] = adapt_first_conv(tensor, want, new_channels_init_mode)
        elif key.endswith(BIAS_TABLE) and tensor.dim() == 2 and tensor.shape[1] == want.shape[1]:
            mapped[key] = resize_bias_table(tensor, want.shape[0])
        else:
            raise ValueError(f"encoder weights {weights}: {key} has shape {tuple(tensor.shape)}, encoder needs {tuple(want.shape)}")
    encoder.load_state_dict(mapped, strict=True)


def adapt_first_conv(pretrained: Tensor, current: Tensor, mode: str) -> Tensor:
    """A first-conv weight for `current.shape[1]` channels from a pretrained one (see above)."""
    n_in, n_pre = current.shape[1], pretrained.shape[1]
    if n_in < n_pre:
        if n_in == 1:
            return pretrained.sum(dim=1, keepdim=True) / n_pre
        return pretrained[:, :n_in].clone()
    out = current.clone()
    out[:, :n_pre] = pretrained
    source = {"copy_first": 0, "copy_second": 1, "copy_third": 2}.get(mode)
    if source is not None:
        for c in range(n_pre, n_in):
            out[:, c] = pretrained[:, min(source, n_pre - 1)]
    return out


def _match_keys(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map checkpoint keys onto encoder keys, allowing timm's flattened feature names and prefixes."""

    def canon(key: str) -> str:
        for prefix in ("model.", "encoder.", "backbone.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        return key.replace("_", ".")

    by_canon = {canon(k): k for k in state}
    out = {}
    for key in target:
        src = by_canon.get(canon(key))
        if src is not None:
            out[key] = state[src]
    return out


def _download_imagenet_state(name: str) -> dict[str, Tensor]:
    """timm's pretrained weights for the encoder name (a download; needs network access)."""
    import timm

    model = timm.create_model(name, pretrained=True)
    return model.state_dict()
