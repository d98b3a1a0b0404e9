"""A rank plans its epoch once, in the main process; its DataLoader workers inherit the plan
instead of each re-planning all of FLAIR-HUB (docs/scaling.md)."""

from __future__ import annotations

import copy
import os

import trainer.data.loader as loader_mod
from trainer.config import validate_config
from trainer.data import StreamingLoader

CFG = {
    "modalities": {
        "inputs": {"SPOT_RGBI": True}, "inputs_channels": {"SPOT_RGBI": [4, 1, 2]},
        "pre_processings": {"filter_sentinel2": False, "temporal_average_sentinel2": False,
                            "temporal_average_sentinel1": False, "calc_elevation": False,
                            "calc_elevation_stack_dsm": False, "use_augmentation": False},
        "normalization": {"norm_type": "scaling"},
    },
    "models": {"multitemp_model": {"ref_date": "05-15"}},
    "hyperparams": {"batch_size": 1, "seed": 3},
    "labels": ["AERIAL_LABEL-COSIA"],
    "labels_configs": {"AERIAL_LABEL-COSIA": {"value_name": {i: str(i) for i in range(19)}}},
}


def test_workers_inherit_the_plan(toy_shards, tmp_path, monkeypatch):
    calls = tmp_path / "plans.txt"
    real = loader_mod.epoch_order

    def recording(*args, **kwargs):
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "epoch_order", recording)
    cfg = copy.deepcopy(CFG)
    cfg["data"] = {"source": str(toy_shards.out), "decode_threads": 1}
    ld = StreamingLoader.from_config(validate_config(cfg), "train", rank=0, world_size=1, num_workers=2, shuffle=True)
    first = [b["patch_id"] for b in ld]
    second = [b["patch_id"] for b in ld]  # the next epoch: planned again, once
    pids = calls.read_text().split()
    assert pids == [str(os.getpid())] * 2, "the epoch must be planned once per epoch, in the rank's own process"
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second
