"""flair-stream's public Python API: a packed FLAIR-HUB dataset in three lines.

    import flair_stream

    ds = flair_stream.open_dataset("s3://bucket/flair-hub")   # or a folder, https://..., hf://datasets/...
    for s in ds.samples("train", modalities=["AERIAL_RGBI", "AERIAL_LABEL-COSIA"]):
        s["arrays"]["AERIAL_RGBI"], s["meta"]["bounds"]        # raw arrays (numpy) + the sample's metadata
    loader = ds.loader("train", config="LC-D", batch_size=8)    # the preprocessed training stream (torch)
    flair_stream.plot_sample(ds["D006-2020_FF-S1-14_5-5"], "patch.png")

This package only re-exports; the code lives in the pipeline's own layers (`trainer.data.dataset`,
`packer.plot`, `trainer.config`, `packer`). Every name is imported on first use, so
`import flair_stream` is instant and reading raw samples never imports torch (only `loader()`,
`StreamingLoader` and `pack_dataset`'s readers need their heavy dependencies). Guide:
docs/loading.md ("Python API").
"""

from __future__ import annotations

from trainer.lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # reading a packed dataset
    "open_dataset": "trainer.data.dataset",
    "PackedDataset": "trainer.data.dataset",
    "decode_array": "packer.shardformat.encoding",
    "wds_decoder": "packer.shardformat.encoding",  # webdataset handler: .npy.zst, .npy.blosc and .json members
    # pictures
    "plot_sample": "packer.plot",
    # configs
    "load_config": "trainer.config",
    "builtin_configs": "trainer.builtin_configs",
    # the pipeline's stages as functions
    "pack_dataset": "packer.pack",
    "StreamingLoader": "trainer.data.loader",
    # the shared facts, as a module
    "schema": "packer:schema",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

