"""The trainer's data side: packed shards -> preprocessed, batched model inputs.

Stages, each its own module: `packer.storage.read` (local / s3 / https / hf readers, shared with
the packer's writers) -> `catalog` (manifest, index, selection) -> `distribution` (epoch order,
rank/worker split) -> `reader` (ranged reads, per-member checksums, decoding and checks by the
shard format's own modules, `packer.shardformat`) -> `sample` + `preprocess` (the reference's
preprocessing) -> `collate` (into a batch buffer) -> `handover` (the shared-memory ring that carries
batches to the training process) -> `normalize` (batched float conversion on the device).
`loader.StreamingLoader` ties them together;
`dataset.PackedDataset` is the user-facing entry (raw samples without torch, and the loader).

The names below are imported on first use (PEP 562), so `import trainer.data` or reading raw
samples does not import torch: only the loader's modules need it.
"""

from __future__ import annotations

from trainer.lazy_exports import lazy_exports

_EXPORTS = {
    # the loader and what a sample is
    "StreamingLoader": "trainer.data.loader",
    "LoaderOptions": "trainer.data.loader_options",
    "SampleSpec": "trainer.data.sample",
    "preprocess_sample": "trainer.data.sample",
    "dates_key": "trainer.data.sample",
    "pad_mask_key": "trainer.data.sample",
    "parse_dates": "trainer.data.preprocess",
    "normalize_custom": "trainer.data.preprocess",
    "select_channels": "trainer.data.preprocess",
    # batches: stacking, then float conversion on the device
    "collate_batch": "trainer.data.collate:collate",
    "normalize_batch": "trainer.data.normalize",
    "to_model_inputs": "trainer.data.normalize",
    # where the shards are, and what is in them
    "open_source": "packer.storage.read",
    "check_source_url": "packer.storage.read",
    "SourceError": "packer.storage.read",
    "SourceURLError": "packer.storage.read",
    "ShardIntegrityError": "packer.storage.read",
    "Catalog": "trainer.data.catalog",
    "Selection": "trainer.data.catalog",
    "SelectionError": "trainer.data.catalog",
    # reading the samples of a selection, and how an epoch is cut into ranks' batches
    "SampleReader": "trainer.data.reader",
    "SampleError": "trainer.data.reader",
    "coalesce_ranges": "trainer.data.reader:coalesce",
    "epoch_order": "trainer.data.distribution",
    "cut_steps": "trainer.data.distribution",
    "prediction_loader": "trainer.data.prediction",
    "labelled_split": "trainer.data.prediction",
    # raw samples, without torch
    "PackedDataset": "trainer.data.dataset",
    "open_dataset": "trainer.data.dataset",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
