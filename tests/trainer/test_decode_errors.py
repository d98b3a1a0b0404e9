"""Damaged or ill-typed members (#11 rows 5 and 2): one line naming shard URL, patch id and member,
never a raw ZstdError traceback, a numpy broadcast error or a silent cast; `data.on_error: skip`
leaves the sample out and keeps every rank's batch count equal."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from packer import schema
from packer.shardformat.encoding import member_checksum
from packer.shardformat.columns import checksum_column
from packer.manifest import file_sha256
from tests.loader_configs import SPOT_CUSTOM_NORM, loader_config
from trainer.config import ConfigError
from trainer.data import StreamingLoader
from trainer.data.collate import BatchLayoutError, collate
from trainer.data.reader import SampleError
from trainer.data.sample import SampleSpec

def config(out, inputs=None, **data):
    if inputs is not None:
        return loader_config(out, {m: [1, 2, 3, 4] for m in inputs}, seed=5, **data)
    return loader_config(out, {"SPOT_RGBI": [4, 1, 2], "SENTINEL1-ASC_TS": [1, 2]}, seed=5, norm=SPOT_CUSTOM_NORM, **data)


def loader_for(out, split="test", inputs=None, data=None, **kw):
    kw.setdefault("rank", 0)
    kw.setdefault("world_size", 1)
    return StreamingLoader.from_config(config(out, inputs, **(data or {})), split, shuffle=True, **kw)


def valid_ids(loaders) -> list[str]:
    return sorted(p for ld in loaders for b in ld for p, v in zip(b["patch_id"], b["valid"]) if v)


def damage_member(out, split="test", member="SENTINEL1-ASC_TS") -> dict:
    """Flip bits inside one array member *and* update its index checksum, so that only the decoder
    can notice (damage that happened before the checksum was taken, or a format-1 pack)."""
    table = pq.read_table(out / schema.INDEX_FILE)
    rows = table.to_pylist()
    i, row = next((i, r) for i, r in enumerate(rows) if r["split"] == split)
    shard = out / row["shard"]
    data = bytearray(shard.read_bytes())
    off, size = row[f"{member}_offset"], row[f"{member}_size"]
    for k in range(size // 3, size // 3 + 16):
        data[off + k] ^= 0xFF
    shard.write_bytes(bytes(data))
    col = checksum_column(member)
    values = table.column(col).to_pylist()
    values[i] = member_checksum(bytes(data[off:off + size]))
    table = table.set_column(table.schema.get_field_index(col), col, pa.array(values, type=pa.uint64()))
    pq.write_table(table, out / schema.INDEX_FILE, compression="zstd")
    manifest = json.loads((out / schema.MANIFEST_FILE).read_text())
    manifest["index"]["sha256"] = file_sha256(out / schema.INDEX_FILE)
    (out / schema.MANIFEST_FILE).write_text(json.dumps(manifest))
    return row


@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_array_member_is_one_line_naming_shard_patch_and_member(shards_copy, workers):
    row = damage_member(shards_copy)
    with pytest.raises(SampleError) as err:
        list(loader_for(shards_copy, num_workers=workers))
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{shards_copy / row['shard']}: {row['patch_id']}: {row['patch_id']}.SENTINEL1-ASC_TS.npy.zst: ")
    assert "zstd" in msg
    assert err.value.__cause__ is None  # not chained to a raw ZstdError


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_leaves_the_sample_out_and_keeps_ranks_equal(shards_copy, toy_shards, workers, caplog):
    row = damage_member(shards_copy)
    with caplog.at_level(logging.WARNING, logger="trainer.data.loader"):
        loaders = [loader_for(shards_copy, data={"on_error": "skip"}, rank=r, world_size=2, num_workers=workers)
                   for r in range(2)]
        batches = [list(ld) for ld in loaders]
    assert len(batches[0]) == len(batches[1]) == len(loaders[0])  # equal batch counts: no DDP hang
    got = sorted(p for bs in batches for b in bs for p, v in zip(b["patch_id"], b["valid"]) if v)
    assert got == sorted(set(toy_shards.tree.result.ids_of("test")) - {row["patch_id"]})
    skipped = [line for ld in loaders for line in ld.skipped]
    assert len(skipped) == 1 and row["patch_id"] in skipped[0] and "SENTINEL1-ASC_TS.npy.zst" in skipped[0]
    assert any(row["patch_id"] in r.getMessage() for r in caplog.records)
    for bs in batches:  # stand-in rows hold a real sample's values, flagged invalid like padding
        for b in bs:
            assert b["SPOT_RGBI"].shape[0] == 2


def test_on_error_is_validated():
    with pytest.raises(ConfigError, match="data.on_error"):
        config("x", on_error="ignore")


def test_a_format_1_payload_in_a_format_2_pack_is_an_error(toy_tree, tmp_path, monkeypatch, legacy_encode):
    """A member whose suffix (and the pack's format) says plain .npy but holds a byte-shuffled payload."""
    from packer.shardformat import writer as sample_mod
    from packer.shardformat.encoding import encode_array
    from packer.pack import pack_dataset

    monkeypatch.setattr(sample_mod, "encode_array",
                        lambda arr, setting: legacy_encode(arr) if arr.dtype == np.uint16 else encode_array(arr, setting))
    out = tmp_path / "mixed"
    pack_dataset(toy_tree.root, out, modalities=["SPOT_RGBI", "SENTINEL1-ASC_TS", "AERIAL_LABEL-COSIA"],
                 workers=1, progress=False)
    with pytest.raises(SampleError, match=r"SPOT_RGBI\.npy\.zst: holds a byte-shuffled \(FSHUF1\) payload"):
        list(loader_for(out))


@pytest.mark.parametrize("change, match", [
    (lambda a: a.astype(np.uint16), r"array is uint16, the pack declares uint8 for AERIAL_RGBI \(refusing to cast\)"),
    (lambda a: a[:, :256, :256].copy(), r"array has shape \[4, 256, 256\], expected \(bands, 512, 512\)"),
])
def test_an_ill_typed_member_is_refused_not_cast(toy_tree, tmp_path, monkeypatch, change, match):
    """A uint16 aerial where the schema says uint8, or a 256 px one: one clear error naming patch and
    member, instead of a silent cast to an all-zero sample or a numpy broadcast error in collate."""
    from packer import encode_patch as sample_mod
    from packer.pack import pack_dataset

    bad = toy_tree.result.ids_of("test")[0]
    real = sample_mod.read_patch

    def read_patch(patch):
        datas = real(patch)
        if patch.patch_id == bad:
            datas["AERIAL_RGBI"].array = change(datas["AERIAL_RGBI"].array)
        return datas

    monkeypatch.setattr(sample_mod, "read_patch", read_patch)
    out = tmp_path / "bad"
    pack_dataset(toy_tree.root, out, modalities=["AERIAL_RGBI", "AERIAL_LABEL-COSIA"], workers=1, progress=False)
    with pytest.raises(SampleError, match=re.escape(f"{bad}: {bad}.AERIAL_RGBI.npy.zst: ") + match):
        list(loader_for(out, inputs=["AERIAL_RGBI"]))


def test_collate_refuses_to_cast_or_broadcast():
    spec = SampleSpec(inputs=("AERIAL_RGBI",), tasks=(), channels={}, label_channels={})
    good = {"patch_id": "a", "AERIAL_RGBI": np.zeros((3, 8, 8), np.uint8)}
    for bad, what in [(np.zeros((3, 8, 8), np.uint16), "uint16"), (np.zeros((3, 4, 4), np.uint8), r"\[3, 4, 4\]")]:
        with pytest.raises(BatchLayoutError, match=f"b: AERIAL_RGBI is .*{what}.*no silent cast"):
            collate([good, {"patch_id": "b", "AERIAL_RGBI": bad}], spec)
    batch = collate([good, dict(good, patch_id="c")], spec)
    assert batch["AERIAL_RGBI"].dtype == torch.uint8 and batch["patch_id"] == ["a", "c"]
