"""Worker processes persist from one epoch to the next (`data.persistent_workers`, default on), get
each epoch's plan from the training process, and give the same batches as fresh workers."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from tests.loader_configs import REFERENCE_PREPROCESSING, SPOT_CUSTOM_NORM, loader_config
from tests.processes import alive
from trainer.data import LoaderOptions, StreamingLoader


def config(out, **data):
    return loader_config(out, {"SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": range(1, 11)}, seed=5, batch_size=2,
                         pre={**REFERENCE_PREPROCESSING, "use_augmentation": True}, norm=SPOT_CUSTOM_NORM,
                         shuffle_window=3, decode_threads=1, **data)


def make(out, persistent=True, **kw):
    cfg = config(out, persistent_workers=persistent)
    return StreamingLoader.from_config(cfg, "train", rank=0, world_size=1, num_workers=2, shuffle=True, **kw)


def fingerprint(batch):
    return tuple(batch["patch_id"]), tuple(
        (k, v.numpy().tobytes()) for k, v in sorted(batch.items()) if torch.is_tensor(v))


def worker_pids(loader) -> list[int]:
    return [w.pid for w in loader._loader._iterator._workers]


def test_same_workers_every_epoch_same_batches_as_fresh_ones(toy_shards):
    fresh = make(toy_shards.out, persistent=False)
    expected = [[fingerprint(b) for b in fresh] for _ in range(3)]
    assert fresh._loader is None  # not persistent: nothing kept between epochs
    loader = make(toy_shards.out)
    got, pids = [], []
    for _ in range(3):
        got.append([fingerprint(b) for b in loader])
        pids.append(worker_pids(loader))
    assert got == expected  # each epoch its own order and augmentation draws, as with fresh workers
    assert expected[0] != expected[1]
    assert pids[0] == pids[1] == pids[2] and all(alive(p) for p in pids[0])
    loader.close()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids[0]), "close() stops persistent workers"


def test_resume_position_reaches_persistent_workers(toy_shards):
    """A state loaded between epochs (another epoch, mid-epoch) is what the kept workers run."""
    loader = make(toy_shards.out)
    list(loader)
    pids = worker_pids(loader)
    state = {**loader.state_dict(), "epoch": 4, "position": 4}
    loader.load_state_dict(state)
    got = [fingerprint(b) for b in loader]
    assert worker_pids(loader) == pids
    fresh = make(toy_shards.out, persistent=False)
    fresh.load_state_dict(state)
    want = [fingerprint(b) for b in fresh]
    assert got == want and len(got) > 0


def test_an_epoch_left_early_stops_the_workers_and_the_next_starts_fresh(toy_shards):
    loader = make(toy_shards.out)
    list(loader)
    first = worker_pids(loader)
    for i, batch in enumerate(loader):
        if i == 0:
            break
    del batch
    gc.collect()
    assert loader._loader is None and loader._ring.held == 0
    rest = [fingerprint(b) for b in loader]  # the rest of that epoch, by new workers
    assert worker_pids(loader) != first
    fresh = make(toy_shards.out, persistent=False)
    list(fresh)
    fresh.load_state_dict({**fresh.state_dict(), "epoch": 1, "position": 2})
    assert rest == [fingerprint(b) for b in fresh]


def test_options_are_checked_once_with_the_setting_named():
    with pytest.raises(ValueError, match="data.on_error"):
        LoaderOptions(on_error="ignore")
    with pytest.raises(ValueError, match="loader option batch_size"):
        LoaderOptions(batch_size=0)
    with pytest.raises(TypeError, match="unknown loader option.*bach_size"):
        LoaderOptions().with_(bach_size=4)
    assert LoaderOptions().with_(num_workers=3).num_workers == 3


def test_options_from_config(toy_shards):
    cfg = config(toy_shards.out, persistent_workers=False, on_error="skip")
    train = LoaderOptions.from_config(cfg, training=True, num_workers=1)
    assert (train.batch_size, train.seed, train.shuffle, train.on_error, train.persistent_workers,
            train.num_workers) == (2, 5, True, "skip", False, 1)
    assert LoaderOptions.from_config(cfg, training=False).shuffle is False
