"""A rank plans its epoch once, in the main process; its DataLoader workers inherit the plan
instead of each re-planning all of FLAIR-HUB (docs/scaling.md)."""

from __future__ import annotations

import os

import trainer.data.loader as loader_mod
from tests.loader_configs import NO_PREPROCESSING, loader_config
from trainer.data import StreamingLoader

def test_workers_inherit_the_plan(toy_shards, tmp_path, monkeypatch):
    calls = tmp_path / "plans.txt"
    real = loader_mod.epoch_order

    def recording(*args, **kwargs):
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "epoch_order", recording)
    cfg = loader_config(toy_shards.out, {"SPOT_RGBI": [4, 1, 2]}, seed=3, batch_size=1, pre=NO_PREPROCESSING,
                        decode_threads=1)
    ld = StreamingLoader.from_config(cfg, "train", rank=0, world_size=1, num_workers=2, shuffle=True)
    first = [b["patch_id"] for b in ld]
    second = [b["patch_id"] for b in ld]  # the next epoch: planned again, once
    pids = calls.read_text().split()
    assert pids == [str(os.getpid())] * 2, "the epoch must be planned once per epoch, in the rank's own process"
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second
