"""`tools/bench_train.py --per-file` feeds the training step batches shaped like the streaming loader's."""

from __future__ import annotations

import torch

from tools.bench_train import REPO, per_file_batches
from trainer.data import StreamingLoader
from trainer.train_config import load_train_config


def test_per_file_batches_are_model_ready_like_the_loaders(toy_shards):
    cfg = load_train_config([REPO / "configs" / "demo"], [f"data.source={toy_shards.out}", "hyperparams.batch_size=2"])
    ours = StreamingLoader.from_config(cfg, "train", rank=0, world_size=1, shuffle=False, augment=False)
    ref = ours.to_model_inputs(next(iter(ours)), "cpu")
    got = next(per_file_batches(cfg, toy_shards.tree.root, workers=0))
    assert set(ref) <= set(got)
    for key, value in ref.items():
        if not torch.is_tensor(value):
            continue
        assert got[key].dtype == value.dtype, key
        assert got[key].shape[0] == value.shape[0] and got[key].shape[2:] == value.shape[2:], key
    for series in ours.spec.series:
        mask = got[series.replace("_TS", "_PAD_MASK")]
        assert mask.dtype == torch.bool and mask.shape == got[series].shape[:2]
