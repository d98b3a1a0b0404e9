"""FLAIR-UPerFuse: built from the merged FLAIR-HUB config, loads the reference's checkpoints.

`build_model(config)` -> `FlairUPerFuse`; see `flair_uperfuse` for the forward contract and
`weights` for loading reference weights and saving our own (safetensors + config JSON).
"""

from .flair_uperfuse import FlairUPerFuse, ModelOutput, build_model
from .spec import INPUT_KEYS, ConfigError, ModelSpec, model_config_subset
from .weights import (
    CheckpointMismatch, check_state_dict, load_model, load_reference_weights, normalise_reference_keys,
    read_saved_config, save_model, state_dict_differences,
)
from .weights_io import read_state_dict
from .window_layout import fit_window_layout

__all__ = [
    "INPUT_KEYS",
    "CheckpointMismatch",
    "ConfigError",
    "FlairUPerFuse",
    "ModelOutput",
    "ModelSpec",
    "build_model",
    "check_state_dict",
    "fit_window_layout",
    "load_model",
    "load_reference_weights",
    "model_config_subset",
    "normalise_reference_keys",
    "read_saved_config",
    "read_state_dict",
    "save_model",
    "state_dict_differences",
]
