"""Loading a model for inference and calling it on a prepared batch.

Two kinds of weights are accepted: every checkpoint `flair-train` writes (`<name>.safetensors`
with the model config in `<name>.json` or in the file's metadata, and the training checkpoints
`best.ckpt` / `last.ckpt`, which hold their training config: nothing else needed), and the
reference's released weights (`.ckpt`, `.pth`, `.safetensors`), which need the config they were
trained with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from trainer import ConfigError, read_training_config
from trainer.data import dates_key, pad_mask_key
from trainer.model import (
    build_model, check_state_dict, fit_window_layout, model_config_subset, normalise_reference_keys,
    read_saved_config, read_state_dict,
)

log = logging.getLogger("flair.infer")
AUX_PREFIX = "aux_decoders."


def our_checkpoint_config(weights: str | Path) -> dict[str, Any] | None:
    """The config document of any checkpoint `flair-train` writes, or None for a foreign weight file.

    `best_model.safetensors` (+ `.json`) carries `{"config", "input_sizes", "train_config_yaml"}`;
    `best.ckpt` / `last.ckpt` (full or weights-only) carry the training config, from which the
    same document is derived (the model was trained at the dataset's patch sizes).
    """
    p = Path(weights)
    if p.suffix == ".ckpt":
        text = read_training_config(p)
        if text is None:
            return None
        train_cfg = yaml.safe_load(text)
        return {"config": model_config_subset(train_cfg), "input_sizes": {}, "train_config_yaml": text}
    if p.suffix != ".safetensors":
        return None
    try:
        return read_saved_config(p)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def check_model_covers(inputs: set[str], tasks: Sequence[str], model_cfg: Mapping[str, Any], source: str,
                       tasks_key: str = "labels") -> None:
    """The model must have been trained on exactly `inputs` and predict every task of `tasks`.

    The one check shared by `flair-infer` (`tasks_key="labels"`) and `flair-zonal` (`"tasks"`);
    raises `ConfigError` naming the key.
    """
    have = {m for m, on in ((model_cfg.get("modalities") or {}).get("inputs") or {}).items() if on}
    if set(inputs) != have:
        raise ConfigError(f"modalities.inputs: the config enables {sorted(inputs)} but {source} was trained on {sorted(have)}")
    labels = list(model_cfg.get("labels") or [])
    missing = [t for t in tasks if t not in labels]
    if missing:
        raise ConfigError(f"{tasks_key}: {missing} requested but {source} predicts only {labels}")


def check_zonal_model(cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], source: str) -> None:
    """`check_model_covers` for a flair-zonal config (its enabled inputs, its active tasks)."""
    check_model_covers({m for m, on in cfg["modalities"]["inputs"].items() if on},
                       [t["name"] for t in cfg["tasks"] if t["active"]], model_cfg, source, tasks_key="tasks")


def load_inference_model(weights: str | Path, config: Mapping[str, Any] | None = None,
                         input_sizes: Mapping[str, int] | None = None,
                         device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model for `weights` and load them (strict); returns (model in eval mode, its config).

    Our checkpoints carry their config, which wins over `config`. Reference weights are loaded
    into a model built from `config`. `input_sizes` (pixels per modality) matters only to
    encoders whose layout depends on the input size (Swin windows on small inputs).
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"model weights not found: {weights}")
    document = our_checkpoint_config(weights)
    if document is not None:
        model_cfg = dict(document["config"])
        sizes = dict(document.get("input_sizes") or {})
    elif config is not None:
        model_cfg = dict(config)
        sizes = {}
    else:
        raise ValueError(
            f"{weights}: not one of our checkpoints (no config JSON beside it or in its metadata); "
            "a reference checkpoint needs the training config it was trained with"
        )
    sizes.update(input_sizes or {})
    model = build_model(model_cfg, input_sizes=sizes or None, pretrained=False)
    load_weights_for_inference(model, weights)
    return model.to(device).eval(), model_cfg


def load_weights_for_inference(model: torch.nn.Module, path: str | Path) -> None:
    """Strict loading, except auxiliary decoders the inference model does not have, and Swin
    bias tables of another window layout.

    Reference multimodal checkpoints carry one auxiliary decoder per modality (training-only
    heads); a model built for inference from the zonal keys has none, as in the reference's
    zonal script. A Swin encoder built for another input size (zonal tiles) has windows of
    another size: its relative-position bias tables are resized as the reference's zonal loader
    does (`trainer.model.window_layout`). Every other missing, unexpected or mis-shaped tensor is
    an error naming it.
    """
    target = model.state_dict()
    expected = set(target)
    state = normalise_reference_keys(read_state_dict(path), expected)
    extra = [k for k in state if k.startswith(AUX_PREFIX) and k not in expected]
    for k in extra:
        del state[k]
    if extra:
        log.info("%s: %d auxiliary-decoder tensors not used for inference", path, len(extra))
    state, resized = fit_window_layout(state, target)
    if resized:
        log.info("%s: %d Swin relative-position bias tables resized to this input size's windows, e.g. %s",
                 path, len(resized), resized[0])
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def predict_logits(model: Any, inputs: Mapping[str, Any], series: Sequence[str], out_size: int,
                   tasks: Sequence[str]) -> dict[str, Tensor]:
    """Logits `(B, C, out_size, out_size)` per task for a batch from `trainer.data.normalize`.

    The model's contract (`trainer.model.flair_uperfuse`): dates and pad masks keyed by series
    name. A series-only model returns its U-TAE logits at the series' own size; they are
    upsampled bilinearly here, as the reference does inside its model.
    """
    dates = {m: inputs[dates_key(m)] for m in series}
    pads = {m: inputs[pad_mask_key(m)] for m in series}
    out = model(inputs, dates, pads, out_size=out_size)
    logits = out.tasks if hasattr(out, "tasks") else out
    missing = [t for t in tasks if t not in logits]
    if missing:
        raise KeyError(f"the model does not predict task(s) {missing}; it predicts {sorted(logits)}")
    res = {}
    for t in tasks:
        x = logits[t]
        if tuple(x.shape[-2:]) != (out_size, out_size):
            x = F.interpolate(x.float(), size=(out_size, out_size), mode="bilinear", align_corners=False)
        res[t] = x
    return res
