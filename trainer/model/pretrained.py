"""Pretrained encoder weights as the reference gets them: ImageNet through smp and timm, from a local cache.

The reference builds every mono-temporal encoder with `smp.create_model(...)` and smp's default
`encoder_weights="imagenet"`, so what it starts from depends on the encoder:

- a timm encoder (the reference's `swin_base_patch4_window12_384`, reached through smp's `tu-`
  fallback): timm's default pretrained tag from the Hugging Face Hub
  (`timm/swin_base_patch4_window12_384.ms_in22k_ft_in1k`, `model.safetensors`), loaded by timm
  itself: its checkpoint filter (Swin bias tables resized to the input's windows), its first-conv
  adaptation to the channel count (`adapt_input_conv`: 1 channel = sum of the RGB filters, other
  counts = RGB filters repeated and scaled by 3/C), the classifier dropped;
- an smp encoder (`resnet18`, `mobilenet_v2`, ...): smp's ImageNet URL (torch hub cache), loaded
  into a 3-channel encoder, then `set_in_channels(C, pretrained=True)` (1 channel: sum; more:
  filters cycled and scaled by 3/C).

`models.monotemp_model.encoder_weights` says which: `imagenet` (the reference's initialisation,
what `configs/flair-hub` and the seed configs use), a local weight file (the same weights taken
from a file: `.safetensors`, or `.pth`/`.bin` read with `weights_only=True`), or null (random).
Files come from the local Hugging Face / torch hub caches first and are downloaded only when
missing; when they are neither cached nor downloadable, `PretrainedUnavailable` names the key,
the weights wanted and the three ways out. The state dict is read here (never unpickled) and
handed to timm / smp, which then apply exactly the reference's conversions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from trainer.config import ConfigError

from .weights_io import read_state_dict

log = logging.getLogger("flair.model")

KEY = "models.monotemp_model.encoder_weights"
HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""What timm looks for in a Hub repo, in its order (`load_state_dict_from_hf`: the safe file first)."""


class PretrainedUnavailable(ConfigError):
    """The pretrained weights are neither in the local caches nor downloadable; the message says what to do."""


@dataclass(frozen=True)
class PretrainedSource:
    """Where the reference's ImageNet weights of an encoder live."""

    encoder: str
    repo: str | None = None  # Hugging Face repo id (timm)
    revision: str | None = None
    files: tuple[str, ...] = HF_FILES
    url: str | None = None  # direct URL (smp encoders; timm models without a Hub copy)

    def describe(self) -> str:
        if self.repo:
            return f"hf://{self.repo}{'@' + self.revision if self.revision else ''} ({' or '.join(self.files)})"
        return str(self.url)

    def cache_hint(self) -> str:
        if self.repo:
            return f"`huggingface-cli download {self.repo} {self.files[0]}` (or copy an HF cache into $HF_HOME)"
        return f"download {self.url} into {_torch_hub_checkpoints()}"


def is_smp_encoder(name: str) -> bool:
    """True when smp builds `name` itself (the reference's first try); else it goes to timm (`tu-`)."""
    return name in smp.encoders.encoders


def imagenet_source(encoder: str) -> PretrainedSource:
    """The weights smp's default `encoder_weights="imagenet"` loads for `encoder`."""
    if is_smp_encoder(encoder):
        settings = smp.encoders.encoders[encoder]["pretrained_settings"]
        if "imagenet" not in settings:
            raise ConfigError(f"{KEY}: smp has no imagenet weights for {encoder} (it has {sorted(settings)}); "
                              "give a weights file or null")
        return PretrainedSource(encoder, url=settings["imagenet"]["url"])
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(encoder)
    except Exception:  # unknown architecture or no pretrained tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"{KEY}: timm has no pretrained weights for {encoder}; give a weights file or null")
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
        return PretrainedSource(encoder, repo=repo, revision=revision or None, files=files)
    return PretrainedSource(encoder, url=cfg.url)


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(source: PretrainedSource) -> Path | None:
    """The weights file in the local cache, or None."""
    if source.repo:
        from huggingface_hub import try_to_load_from_cache

        for name in source.files:
            found = try_to_load_from_cache(source.repo, name, cache_dir=_hf_cache_dir(), revision=source.revision)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
        return None
    path = _torch_hub_checkpoints() / os.path.basename(urlparse(source.url or "").path)
    return path if path.is_file() else None


def fetch(source: PretrainedSource) -> Path:
    """The cached weights file, downloaded first when missing; `PretrainedUnavailable` when impossible."""
    found = cached_file(source)
    if found is not None:
        return found
    try:
        _check_reachable(source)
        if source.repo:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            last: Exception | None = None
            for name in source.files:
                try:
                    return Path(hf_hub_download(source.repo, name, revision=source.revision, cache_dir=_hf_cache_dir()))
                except EntryNotFoundError as exc:  # try the next file name, as timm does
                    last = exc
            raise last or FileNotFoundError(source.describe())
        target = _torch_hub_checkpoints() / os.path.basename(urlparse(source.url or "").path)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source.url, str(target), progress=False)
        return target
    except Exception as exc:  # offline, DNS, HTTP errors, read-only cache: one clear line instead
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        raise PretrainedUnavailable(
            f"{KEY}: imagenet wants the reference's {source.encoder} weights {source.describe()}, which are not in "
            f"the local cache and could not be downloaded ({reason}); either put them in the cache "
            f"({source.cache_hint()}), or give a local file ({KEY}: path/to/weights.safetensors), or start "
            f"from random weights ({KEY}: null)"
        ) from None


def _check_reachable(source: PretrainedSource, timeout: float = 5.0) -> None:
    """Fail fast when the download cannot work (offline mode, no route to the host).

    The Hub client retries a failed connection with back-off for about 20 s per file name;
    one plain connection attempt answers the same question at once.
    """
    import socket

    from huggingface_hub import constants

    if source.repo and constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    url = urlparse(constants.ENDPOINT if source.repo else (source.url or ""))
    port = url.port or (443 if url.scheme == "https" else 80)
    with socket.create_connection((url.hostname or "", port), timeout=timeout):
        pass


def resolve(encoder: str, weights: str) -> Path:
    """The local file holding `weights` (`imagenet` or a path) for `encoder`; fetched when needed."""
    if weights == "imagenet":
        return fetch(imagenet_source(encoder))
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PretrainedUnavailable(f"{KEY}: no such file {path} (give an existing weights file, `imagenet` for the "
                                    f"reference's weights, or null for random ones)")
    return path


def check_available(config: Any) -> Path | None:
    """At the start of a run: the pretrained weights the config asks for are at hand (fetched if not).

    Returns the file, or None when no pretrained weights are wanted (or no mono-temporal input).
    """
    from .spec import ModelSpec

    spec = ModelSpec.from_config(config)
    if spec.encoder_weights is None or not spec.mono:
        return None
    path = resolve(spec.encoder_name, spec.encoder_weights)
    log.info("pretrained %s weights: %s", spec.encoder_name, path)
    return path


def library_pretrained_encoder(encoder: str, state: dict[str, Tensor], in_channels: int, depth: int,
                               img_size: int) -> nn.Module:
    """An smp encoder loaded with `state` exactly as smp / timm load their ImageNet weights.

    Raises `RuntimeError` naming the missing keys when `state` is not that encoder's (timm loads
    feature extractors non-strictly and only logs them: its log is read here).
    """
    if is_smp_encoder(encoder):
        module = smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights=None)
        module.load_state_dict(dict(state))  # strict; smp's encoders drop their classifier here
        module.set_in_channels(in_channels, pretrained=True)
        return module
    kwargs: dict[str, Any] = dict(in_channels=in_channels, depth=depth, weights="imagenet",
                                  pretrained_cfg_overlay={"state_dict": dict(state)})
    with _TimmMissingKeys(encoder) as missing:
        try:  # the reference's fallback order: with img_size, then without
            module = smp.encoders.get_encoder("tu-" + encoder, img_size=img_size, **kwargs)
        except TypeError:
            module = smp.encoders.get_encoder("tu-" + encoder, **kwargs)
    if missing.keys:
        raise RuntimeError(f"{len(missing.keys)} tensors missing from the weights, e.g. {missing.keys[:5]}")
    return module


class _TimmMissingKeys(logging.Handler):
    """Collects the keys timm reports missing while loading pretrained weights, classifier excepted."""

    LOGGER = "timm.models._builder"

    def __init__(self, encoder: str) -> None:
        super().__init__(logging.INFO)
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder)
        classifier = (cfg.classifier if cfg is not None else None) or ()
        self.classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            names = message[len("Missing keys ("):message.index(")")].split(", ")
            self.keys += [k for k in names if not k.startswith(tuple(c + "." for c in self.classifier))]

    def __enter__(self) -> "_TimmMissingKeys":
        logger = logging.getLogger(self.LOGGER)
        self._level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: Any) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._level)
