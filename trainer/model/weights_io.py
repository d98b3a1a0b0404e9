"""Reading weight files without unpickling code: `.safetensors`, or torch files with `weights_only=True`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weight file: safetensors, a plain `.pth` state dict, or a Lightning `.ckpt`.

    Lightning checkpoints nest the weights under `state_dict`; some exports use `model` or
    `model_state_dict`. Only tensors are returned (other entries are not weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return dict(load_file(str(path), device="cpu"))
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError subclasses and RuntimeError here
        raise ValueError(f"{path}: not a weights-only torch file ({exc.__class__.__name__}: {exc})") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    return tensors
