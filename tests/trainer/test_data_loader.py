"""The streaming loader end to end on packed toy shards: partitions, workers, resume, selection, integrity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trainer.config import validate_config
from trainer.data import StreamingLoader
from trainer.data.catalog import SelectionError
from packer.storage.read import ShardIntegrityError

CFG = {
    "modalities": {
        "inputs": {"SPOT_RGBI": True, "SENTINEL1-ASC_TS": True},
        "inputs_channels": {"SPOT_RGBI": [4, 1, 2], "SENTINEL1-ASC_TS": [1, 2]},
        "pre_processings": {"filter_sentinel2": True, "temporal_average_sentinel2": False,
                            "temporal_average_sentinel1": False, "calc_elevation": True,
                            "calc_elevation_stack_dsm": True, "use_augmentation": True},
        "normalization": {"norm_type": "custom", "SPOT_RGBI_means": [433.26, 508.75, 467.77, 1137.03],
                          "SPOT_RGBI_stds": [312.76, 284.61, 226.02, 543.11]},
    },
    "models": {"multitemp_model": {"ref_date": "05-15"}},
    "hyperparams": {"batch_size": 2, "seed": 11},
    "labels": ["AERIAL_LABEL-COSIA"],
    "labels_configs": {"AERIAL_LABEL-COSIA": {"value_name": {i: str(i) for i in range(19)}}},
}


def cfg_for(out, **data):
    cfg = copy.deepcopy(CFG)
    cfg["data"] = {"source": str(out), "shuffle_window": 3, **data}
    return validate_config(cfg)


def make(cfg, split, **kw):
    """A loader for one rank; shuffled by default so that order-related tests mean something."""
    kw.setdefault("rank", 0)
    kw.setdefault("world_size", 1)
    kw.setdefault("shuffle", True)
    return StreamingLoader.from_config(cfg, split, **kw)


def fingerprint(batch):
    """Ids, validity and a checksum of every tensor: enough to call two batches identical."""
    sums = tuple(round(float(v.double().sum()), 6) for k, v in sorted(batch.items()) if torch.is_tensor(v))
    return tuple(batch["patch_id"]), tuple(batch["valid"].tolist()), sums


def all_ids(toy_shards, split):
    return sorted(toy_shards.tree.result.ids_of(split))


@pytest.mark.parametrize("split", ["train", "test"])
def test_ranks_partition_the_split(toy_shards, split):
    cfg = cfg_for(toy_shards.out)
    for world in (1, 2, 3, 4):
        loaders = [make(cfg, split, rank=r, world_size=world, num_workers=0, shuffle=True)
                   for r in range(world)]
        batches = [list(ld) for ld in loaders]
        assert len({len(b) for b in batches}) == 1, f"world {world}: ranks yield different batch counts"
        assert len(batches[0]) == len(make(cfg, split, rank=0, world_size=world))
        valid = [p for b in batches for batch in b for p, v in zip(batch["patch_id"], batch["valid"]) if v]
        assert sorted(valid) == all_ids(toy_shards, split), f"world {world}: not a partition"


def test_worker_processes_give_the_same_batches(toy_shards):
    cfg = cfg_for(toy_shards.out, decode_threads=2)
    ref = [fingerprint(b) for b in make(cfg, "test", num_workers=0,
                                                               shuffle=True)]
    got = [fingerprint(b) for b in make(cfg, "test", num_workers=2,
                                                               shuffle=True)]
    assert got == ref


def test_epochs_reshuffle_and_are_reproducible(toy_shards):
    cfg = cfg_for(toy_shards.out)
    a = make(cfg, "test", batch_size=1)
    epochs = [[b["patch_id"][0] for b in a] for _ in range(4)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(map(tuple, epochs))) > 1
    b = make(cfg, "test", batch_size=1)
    b.set_epoch(2)
    assert [x["patch_id"][0] for x in b] == epochs[2]


@pytest.mark.parametrize("k", [1, 2])
def test_exact_resume(toy_shards, k):
    cfg = cfg_for(toy_shards.out)
    full = make(cfg, "test", batch_size=1, num_workers=0)
    full.set_epoch(1)
    reference = [fingerprint(b) for b in full]

    first = make(cfg, "test", batch_size=1, num_workers=2)
    first.set_epoch(1)
    got = []
    for batch in first:
        got.append(fingerprint(batch))
        if len(got) == k:
            break
    state = first.state_dict()
    resumed = make(cfg, "test", batch_size=1, num_workers=2)
    resumed.load_state_dict(state)
    got += [fingerprint(b) for b in resumed]
    assert got == reference
    assert resumed.epoch == 2 and resumed.position == 0


def test_resume_with_another_world_size(toy_shards):
    cfg = cfg_for(toy_shards.out)
    two = [make(cfg, "test", rank=r, world_size=2, batch_size=1) for r in range(2)]
    seen = []
    for ld in two:
        it = iter(ld)
        batch = next(it)
        seen += [p for p, v in zip(batch["patch_id"], batch["valid"]) if v]
    state = two[0].state_dict()
    assert state["position"] == 2
    three = [make(cfg, "test", rank=r, world_size=3, batch_size=1) for r in range(3)]
    for ld in three:
        ld.load_state_dict(state)
        seen += [p for b in ld for p, v in zip(b["patch_id"], b["valid"]) if v]
    assert sorted(seen) == all_ids(toy_shards, "test")


def test_state_from_another_selection_is_refused(toy_shards):
    cfg = cfg_for(toy_shards.out)
    state = make(cfg, "test").state_dict()
    other = make(cfg, "train")
    with pytest.raises(ValueError, match="samples"):
        other.load_state_dict(state)


def test_selection_from_the_index(toy_shards):
    ids = all_ids(toy_shards, "train")
    cfg = cfg_for(toy_shards.out, select={"patch_ids": ids[:2]})
    got = [p for b in make(cfg, "train") for p in b["patch_id"]]
    assert sorted(got) == ids[:2]

    domain = ids[0].split("_")[0]
    cfg = cfg_for(toy_shards.out, select={"domains": [domain]})
    got = {p for b in make(cfg, "train") for p in b["patch_id"]}
    assert got and all(p.startswith(domain) for p in got)

    with pytest.raises(SelectionError, match="not in the index"):
        make(cfg_for(toy_shards.out, select={"patch_ids": ["D001-2020_XX-S1-1_1-1"]}), "train",
                                    rank=0, world_size=1)


def test_class_filters_match_the_labels(toy_shards):
    """`contains_class` / `min_class_share` agree with the label maps actually loaded."""
    base = make(cfg_for(toy_shards.out), "test", augment=False)
    labels = {p: b["AERIAL_LABEL-COSIA"][i].numpy() for b in base for i, p in enumerate(b["patch_id"])}
    counts = {p: np.bincount(lab.ravel(), minlength=19) for p, lab in labels.items()}
    cls = int(np.argmax(sum(counts.values())))  # a class present somewhere
    present = sorted(p for p, c in counts.items() if c[cls] > 0)
    share = float(np.median([c[cls] / c.sum() for c in counts.values()]))
    big = sorted(p for p, c in counts.items() if c[cls] / c.sum() >= share)

    def ids(select):
        ld = make(cfg_for(toy_shards.out, select=select), "test")
        return sorted(p for b in ld for p, v in zip(b["patch_id"], b["valid"]) if v)

    assert ids({"contains_class": {"AERIAL_LABEL-COSIA": cls}}) == present
    assert ids({"min_class_share": {"AERIAL_LABEL-COSIA": {cls: share}}}) == big
    assert len(big) < len(counts)


def test_class_balanced_sampling_runs(toy_shards):
    cfg = cfg_for(toy_shards.out, class_balanced=True)
    ld = make(cfg, "train", batch_size=1)
    ids = [b["patch_id"][0] for b in ld]
    assert len(ids) == len(all_ids(toy_shards, "train")) and set(ids) <= set(all_ids(toy_shards, "train"))


def _first_shard(out, split="test"):
    return sorted((out / split).glob("*.tar"))[0]


def test_corrupted_shard_detected_with_verification(shards_copy):
    shard = _first_shard(shards_copy)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    shard.write_bytes(bytes(data))
    ld = make(cfg_for(shards_copy, verify=True), "test", shuffle=False)
    with pytest.raises(ShardIntegrityError, match=str(shard.name)):
        list(ld)


def test_truncated_shard_detected_without_verification(shards_copy):
    shard = _first_shard(shards_copy)
    shard.write_bytes(shard.read_bytes()[:-512])
    ld = make(cfg_for(shards_copy, verify=False), "test", shuffle=False)
    with pytest.raises(ShardIntegrityError, match="manifest says"):
        list(ld)


def test_missing_manifest_is_a_clear_error(shards_copy):
    (shards_copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest"):
        make(cfg_for(shards_copy), "test")


def test_samples_lacking_an_enabled_modality_are_left_out(toy_tree_missing, tmp_path):
    from packer.pack import pack_dataset

    out = tmp_path / "shards"
    pack_dataset(toy_tree_missing.root, out, shard_size=5_000_000, workers=1, progress=False)
    res = toy_tree_missing.result
    lacking = [p for p in res.patch_ids if not {"SPOT_RGBI", "SENTINEL1-ASC_TS"} <= set(res.modalities[p])]
    assert lacking, "the fixture should have patches without SPOT or S1-ASC"
    for split in ("train", "test"):
        having = sorted(p for p in res.ids_of(split) if {"SPOT_RGBI", "SENTINEL1-ASC_TS"} <= set(res.modalities[p]))
        if not having:
            with pytest.raises(SelectionError):
                make(cfg_for(out), split)
            continue
        got = sorted(p for b in make(cfg_for(out), split) for p, v in zip(b["patch_id"], b["valid"]) if v)
        assert got == having


def test_class_filter_errors_name_the_key(toy_shards):
    with pytest.raises(SelectionError, match="contains_class.AERIAL_LABEL-COSIA: class 40"):
        make(cfg_for(toy_shards.out, select={"contains_class": {"AERIAL_LABEL-COSIA": 40}}), "test")
