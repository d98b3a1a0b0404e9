"""The trainer's data side: packed shards -> preprocessed, batched model inputs (DESIGN section 4).

Stages, each its own module: `sources` (local / s3 / https / hf readers) -> `catalog` (manifest,
index, selection) -> `distribution` (epoch order, rank/worker split) -> `reader` (ranged reads,
decoding) -> `sample` + `preprocess` (the reference's preprocessing) -> `collate` -> `normalize`
(batched float conversion on the device). `loader.StreamingLoader` ties them together.
"""

from trainer.data.loader import StreamingLoader
from trainer.data.sample import SampleSpec, dates_key, pad_mask_key

__all__ = ["StreamingLoader", "SampleSpec", "dates_key", "pad_mask_key"]
