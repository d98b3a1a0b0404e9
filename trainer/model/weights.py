"""Model weights in and out.

- `load_reference_weights`: the reference's released weights (`.safetensors`, Lightning `.ckpt`
  with `state_dict` and `model.` prefixes, plain `.pth`) into our model, strict: any missing,
  unexpected or mis-shaped tensor is reported by name and nothing is loaded. Loss buffers
  (`criterion.*`) of Lightning checkpoints are not model weights and are dropped.
- `save_model` / `load_model`: our own checkpoints, `<name>.safetensors` plus `<name>.json` with
  the model config that built them (also embedded in the safetensors metadata), so inference
  needs nothing else. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from packer.atomic import atomic_path, write_text_atomic

from .flair_uperfuse import FlairUPerFuse, build_model
from .weights_io import read_state_dict

LIGHTNING_PREFIX = "model."
IGNORED_PREFIXES = ("criterion.",)
FORMAT_NAME = "flair-uperfuse"
FORMAT_VERSION = 1
METADATA_KEY = "flair_uperfuse_config"


class CheckpointMismatch(KeyError):
    """Checkpoint keys or shapes do not match the model; the message lists them."""

    def __str__(self) -> str:  # KeyError would print the message repr-quoted
        return str(self.args[0])


def normalise_reference_keys(state: Mapping[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Drop loss buffers and Lightning's `model.` prefix (only when our keys do not carry it)."""
    out = {}
    strip = not any(k.startswith(LIGHTNING_PREFIX) for k in model_keys)
    for key, value in state.items():
        if strip and key.startswith(LIGHTNING_PREFIX):
            key = key[len(LIGHTNING_PREFIX):]
        if key.startswith(IGNORED_PREFIXES):
            continue
        out[key] = value
    return out


def state_dict_differences(model: torch.nn.Module, state: Mapping[str, Tensor],
                           ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """Keys of `model` missing from `state`, keys of `state` the model lacks, and (key, shape in
    `state`, shape in the model) for each mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape))
              for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, shapes


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], source: str, shown: int = 20) -> None:
    """Raise `CheckpointMismatch` naming every missing, unexpected and mis-shaped key."""
    missing, unexpected, mis_shaped = state_dict_differences(model, state)
    shapes = sorted(f"{k}: checkpoint {ours} vs model {theirs}" for k, ours, theirs in mis_shaped)
    if not (missing or unexpected or shapes):
        return
    lines = [f"{source} does not match the model built from the config:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            lines.append(f"  {len(items)} {title} key(s):")
            lines += [f"    {k}" for k in items[:shown]]
            if len(items) > shown:
                lines.append(f"    ... and {len(items) - shown} more")
    lines.append("  (the config's modalities, channels, tasks and arch must be those the checkpoint was trained with)")
    raise CheckpointMismatch("\n".join(lines))


def load_reference_weights(model: FlairUPerFuse, path: str | Path) -> None:
    """Load a reference (or our) weight file into `model` with strict key and shape matching."""
    state = normalise_reference_keys(read_state_dict(path), set(model.state_dict()))
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)


def save_model(model: FlairUPerFuse, path: str | Path, train_config_yaml: str | None = None) -> tuple[Path, Path]:
    """Write `<path>.safetensors` and `<path>.json` (the building config); returns both paths.

    `train_config_yaml`, the whole training config as YAML text (YAML keeps the integer class keys
    that JSON would turn into strings), travels along so that inference reproduces the training
    preprocessing (channels, normalisation statistics, filters) with nothing but the checkpoint.
    """
    if model.model_config is None:
        raise ValueError("this model was not built from a config (use build_model); nothing to save with it")
    weights_path = Path(path).with_suffix(".safetensors")
    config_path = weights_path.with_suffix(".json")
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "input_sizes": dict(model.spec.input_sizes),
        "config": model.model_config,
    }
    if train_config_yaml is not None:
        document["train_config_yaml"] = train_config_yaml
    text = json.dumps(document, indent=2, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    write_text_atomic(config_path, text + "\n")
    return weights_path, config_path


def read_saved_config(path: str | Path) -> dict[str, Any]:
    """The config document of one of our checkpoints: the `.json` beside it, else the metadata."""
    weights_path = Path(path).with_suffix(".safetensors")
    config_path = weights_path.with_suffix(".json")
    if config_path.is_file():
        text = config_path.read_text(encoding="utf-8")
    else:
        with safe_open(str(weights_path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY, "")
        if not text:
            raise FileNotFoundError(f"{config_path} not found and {weights_path} carries no model config")
    document = json.loads(text)
    if document.get("format") != FORMAT_NAME:
        raise ValueError(f"{config_path}: not a {FORMAT_NAME} checkpoint config")
    return document


def load_model(path: str | Path, device: str | torch.device = "cpu") -> FlairUPerFuse:
    """Rebuild a model saved by `save_model` and load its weights (strict)."""
    weights_path = Path(path).with_suffix(".safetensors")
    document = read_saved_config(weights_path)
    model = build_model(document["config"], input_sizes=document.get("input_sizes"), pretrained=False)
    load_reference_weights(model, weights_path)
    return model.to(device)


