"""Small training configs for loader tests: the inputs and preprocessing a test needs, the rest fixed.

One builder instead of a config dict copied into every loader test (`from tests.loader_configs
import loader_config`; the repository root is on pytest's `pythonpath`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from trainer.config import validate_config

NO_PREPROCESSING = {"filter_sentinel2": False, "temporal_average_sentinel2": False,
                    "temporal_average_sentinel1": False, "calc_elevation": False,
                    "calc_elevation_stack_dsm": False, "use_augmentation": False}
REFERENCE_PREPROCESSING = {**NO_PREPROCESSING, "filter_sentinel2": True, "calc_elevation": True,
                           "calc_elevation_stack_dsm": True}
SPOT_CUSTOM_NORM = {"norm_type": "custom", "SPOT_RGBI_means": [433.26, 508.75, 467.77, 1137.03],
                    "SPOT_RGBI_stds": [312.76, 284.61, 226.02, 543.11]}
N_CLASSES = {"AERIAL_LABEL-COSIA": 19, "ALL_LABEL-LPIS": 23}


def loader_config(source: Any, inputs: Mapping[str, Sequence[int]], *, seed: int, batch_size: int = 2,
                  labels: Sequence[str] = ("AERIAL_LABEL-COSIA",), pre: Mapping[str, Any] = REFERENCE_PREPROCESSING,
                  norm: Mapping[str, Any] | None = None, **data: Any) -> dict:
    """A validated config: `inputs` maps each input to its channels (empty: the fixed ones of PAN and DEM);
    `data` goes under `data:`."""
    cfg = {
        "modalities": {"inputs": {m: True for m in inputs}, "inputs_channels": {m: list(c) for m, c in inputs.items() if c},
                       "pre_processings": dict(pre), "normalization": dict(norm or {"norm_type": "scaling"})},
        "models": {"multitemp_model": {"ref_date": "05-15"}},
        "hyperparams": {"batch_size": batch_size, "seed": seed},
        "labels": list(labels),
        "labels_configs": {t: {"value_name": {i: str(i) for i in range(N_CLASSES[t])}} for t in labels},
        "data": {"source": str(source), **data},
    }
    return validate_config(cfg)
