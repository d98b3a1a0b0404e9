"""flair-stream trainer: streaming loader, FLAIR-UPerFuse model, Accelerate training loop.

The middle layer's public API is what the three package roots export: this one (configs,
checkpoints of a training run, metrics and their report), `trainer.data` (shards -> model inputs)
and `trainer.model` (the model and its weight files). `inference/` and `tools/` import from
these roots only; every other module is the trainer's own business and may change.

Names are imported on first use (PEP 562): `import trainer.data` or reading a config does not
import torch.
"""

from __future__ import annotations

from trainer.lazy_exports import lazy_exports

_EXPORTS = {
    # configs: reading, validating, the shipped ones
    "ConfigError": "trainer.config",
    "validate_config": "trainer.config",
    "read_config_layers": "trainer.config",
    "deep_merge": "trainer.config",
    "load_train_config": "trainer.train_config",
    # a training run, its loss, optimiser and forward pass (benchmarks drive them piece by piece)
    "run_training": "trainer.train:run",
    "model_forward": "trainer.train:forward",
    "CompositeLoss": "trainer.losses",
    "build_optimizer": "trainer.optim",
    # validators, to check the keys of other tools' configs (flair-zonal's) with the same messages
    "anything": "trainer.config",
    "is_bool": "trainer.config",
    "is_int": "trainer.config",
    "is_number": "trainer.config",
    "is_str": "trainer.config",
    "list_of": "trainer.config",
    "mapping": "trainer.config",
    "one_of": "trainer.config",
    "optional": "trainer.config",
    "month_day": "trainer.config:_mm_dd",
    "builtin_config": "trainer.builtin_configs",
    "builtin_config_paths": "trainer.builtin_configs:builtin_configs",  # the module is trainer.builtin_configs
    # a training run's checkpoints
    "CheckpointError": "trainer.train_checkpoint",
    "read_training_config": "trainer.train_checkpoint",
    # metrics and their report
    "ConfusionMatrix": "trainer.metrics",
    "metrics_for_task": "trainer.metrics",
    "task_class_names": "trainer.metrics",
    "class_table_markdown": "trainer.report",
    "plot_confusion": "trainer.report",
    "plot_iou": "trainer.report",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
