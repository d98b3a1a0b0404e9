"""The trainer's data side: packed shards -> preprocessed, batched model inputs (DESIGN section 4).

Stages, each its own module: `sources` (local / s3 / https / hf readers) -> `catalog` (manifest,
index, selection) -> `distribution` (epoch order, rank/worker split) -> `reader` (ranged reads,
per-member checksums, decoding with `packer.codec`) -> `sample` + `preprocess` (the reference's
preprocessing) -> `collate` (into a batch buffer) -> `handover` (the shared-memory ring that carries
batches to the training process) -> `normalize` (batched float conversion on the device).
`loader.StreamingLoader` ties them together.
"""

from trainer.data.loader import StreamingLoader
from trainer.data.sample import SampleSpec, dates_key, pad_mask_key

__all__ = ["StreamingLoader", "SampleSpec", "dates_key", "pad_mask_key"]
