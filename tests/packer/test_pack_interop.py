"""A default pack is readable by the ecosystem's own clients, every member bit-exact against rasterio.

- plain `webdataset` + `zstandard` + `np.load(allow_pickle=False)` (what a user would write),
- `webdataset` with our registered decoder handler (`packer.codec.wds_decoder`),
- Hugging Face `datasets.load_dataset("webdataset", data_files=..., streaming=True)` (the Hub's tar builder).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio
import zstandard

from packer import schema
from packer.shardformat.encoding import wds_decoder

wds = pytest.importorskip("webdataset")


def shard_paths(toy_shards) -> list[str]:
    return [str(p) for p in sorted(toy_shards.out.glob("*/*.tar"))]


def reference(toy_shards, patch_id: str, modality: str) -> np.ndarray:
    with rasterio.open(toy_shards.tree.result.path(patch_id, modality)) as f:
        return f.read()


def same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def expected_members(toy_shards) -> set[tuple[str, str]]:
    res = toy_shards.tree.result
    return {(pid, m) for pid in res.patch_ids for m in res.modalities[pid]}


def test_plain_webdataset_zstd_numpy_reads_every_member(toy_shards):
    seen = set()
    dctx = zstandard.ZstdDecompressor()
    for sample in wds.WebDataset(shard_paths(toy_shards), shardshuffle=False):
        pid = sample["__key__"]
        meta = json.loads(sample["json"])
        assert meta["patch_id"] == pid
        for mod in meta["modalities"]:
            raw = dctx.decompress(sample[schema.wds_member_key(mod)])
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
            assert same_bits(arr, reference(toy_shards, pid, mod)), f"{pid} {mod}"
            seen.add((pid, mod))
    assert seen == expected_members(toy_shards)
    assert len({m for _, m in seen}) == len(schema.MODALITY_NAMES)  # all ten modalities


def test_webdataset_with_the_registered_decoder_handler(toy_shards):
    n = 0
    for sample in wds.WebDataset(shard_paths(toy_shards), shardshuffle=False).decode(wds_decoder):
        pid = sample["__key__"]
        for mod in sample["json"]["modalities"]:
            assert same_bits(sample[schema.wds_member_key(mod)], reference(toy_shards, pid, mod)), f"{pid} {mod}"
            n += 1
    assert n == len(expected_members(toy_shards))


@pytest.mark.slow
def test_hugging_face_datasets_webdataset_builder_reads_every_member(toy_shards):
    datasets = pytest.importorskip("datasets")
    files = {split: [str(p) for p in sorted((toy_shards.out / split).glob("*.tar"))]
             for split in ("train", "valid", "test") if (toy_shards.out / split).is_dir()}
    seen = set()
    for split, paths in files.items():
        ds = datasets.load_dataset("webdataset", data_files={split: paths}, split=split, streaming=True)
        for sample in ds.with_format("numpy"):
            pid = sample["__key__"]
            meta = sample["json"]
            for mod in meta["modalities"]:
                want = reference(toy_shards, pid, mod)
                got = sample[schema.member_key(mod)]  # the builder keeps the member's case
                # The builder decodes .npy.zst with numpy and stores integers as int64: equal values,
                # losslessly castable back, and floats keep their exact bits.
                assert got.shape == want.shape, f"{pid} {mod}"
                back = got.astype(want.dtype)
                assert np.array_equal(back.astype(got.dtype), got) and same_bits(back, want), f"{pid} {mod}"
                seen.add((pid, mod))
    assert seen == expected_members(toy_shards)


def test_a_member_whose_content_disagrees_with_its_suffix_is_refused(legacy_encode):
    """A byte-shuffled (format-1) payload under .npy.zst: numpy refuses it without unpickling,
    and so does our handler (it never guesses)."""
    arr = np.arange(400, dtype=np.float32).reshape(4, 10, 10)
    old = legacy_encode(arr, filter="shuffle")
    raw = zstandard.ZstdDecompressor().decompress(old)
    with pytest.raises(ValueError):
        np.load(io.BytesIO(raw), allow_pickle=False)
    with pytest.raises(ValueError, match="FSHUF1"):
        wds_decoder("dem_elev.npy.zst", old)
