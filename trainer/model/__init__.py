"""FLAIR-UPerFuse: built from the merged FLAIR-HUB config, loads the reference's checkpoints.

`build_model(config)` -> `FlairUPerFuse`; see `flair_uperfuse` for the forward contract and
`checkpoint` for loading reference weights and saving our own (safetensors + config JSON).
"""

from .checkpoint import CheckpointMismatch, load_model, load_reference_weights, save_model
from .flair_uperfuse import FlairUPerFuse, ModelOutput, build_model
from .spec import ConfigError, ModelSpec

__all__ = [
    "CheckpointMismatch",
    "ConfigError",
    "FlairUPerFuse",
    "ModelOutput",
    "ModelSpec",
    "build_model",
    "load_model",
    "load_reference_weights",
    "save_model",
]
