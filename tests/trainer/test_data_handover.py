"""Batch hand-over through the shared-memory ring: zero-copy views, slot reuse, safe when batches are
kept, same batches whatever the worker count or start method, and no memory left behind on a normal
exit, an exception or a kill."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.loader_configs import REFERENCE_PREPROCESSING, SPOT_CUSTOM_NORM, loader_config
from tests.processes import alive
from trainer.data import StreamingLoader

REPO = Path(__file__).resolve().parents[2]
def make(out, split="train", **kw):
    cfg = loader_config(out, {"SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": range(1, 11)}, seed=13,
                        pre={**REFERENCE_PREPROCESSING, "use_augmentation": True}, norm=SPOT_CUSTOM_NORM,
                        shuffle_window=3, decode_threads=2)
    kw.setdefault("rank", 0)
    kw.setdefault("world_size", 1)
    return StreamingLoader.from_config(cfg, split, shuffle=True, **kw)


def fingerprint(batch):
    return tuple(batch["patch_id"]), tuple(batch["valid"].tolist()), tuple(
        (k, v.dtype, tuple(v.shape), v.numpy().tobytes()) for k, v in sorted(batch.items()) if torch.is_tensor(v))


def in_ring(loader, tensor) -> bool:
    ring = loader._ring
    base = ring.slot(0).ctypes.data - ring.header
    return base <= tensor.data_ptr() < base + ring.size


def test_batches_view_the_ring_and_slots_are_reused(toy_shards):
    loader = make(toy_shards.out, batch_size=1)
    loader.dataset.decode_threads = 1  # one batch in flight: 3 slots for the whole epoch
    slots = set()
    n = 0
    for batch in loader:
        assert in_ring(loader, batch["SPOT_RGBI"]) and in_ring(loader, batch["SENTINEL2_TS"])
        slots.add(batch["SPOT_RGBI"].data_ptr())
        n += 1
    del batch
    gc.collect()
    assert n == len(make(toy_shards.out, batch_size=1)) and loader._ring.held == 0
    assert len(slots) <= loader._ring.n_slots < n  # the same pages, reused from batch to batch


@pytest.mark.parametrize("workers", [0, 2])
def test_kept_batches_stay_intact(toy_shards, workers):
    """Keeping every batch (more than the ring holds) falls back to private buffers: same values."""
    streamed = [fingerprint(b) for b in make(toy_shards.out, num_workers=workers)]
    kept = list(make(toy_shards.out, num_workers=workers))
    assert [fingerprint(b) for b in kept] == streamed


def test_an_epoch_left_early_gives_its_slots_back(toy_shards):
    loader = make(toy_shards.out, num_workers=2, batch_size=1)
    for i, batch in enumerate(loader):
        if i == 1:
            break
    del batch
    gc.collect()
    assert loader._active is None and loader._ring.held == 0
    rest = [fingerprint(b) for b in loader]  # resumes after the two consumed batches
    assert len(rest) == len(make(toy_shards.out, batch_size=1)) - 2


@pytest.mark.slow
def test_spawned_workers_map_the_ring_too(toy_shards):
    fork = [fingerprint(b) for b in make(toy_shards.out, split="test", num_workers=2)]
    spawn = make(toy_shards.out, split="test", num_workers=2, multiprocessing_context="spawn")
    assert [fingerprint(b) for b in spawn] == fork
    assert spawn._ring is not None


CHILD = r"""
import json, os, sys, time, copy
sys.path.insert(0, sys.argv[1])
from tests.trainer.test_data_handover import make
mode, out = sys.argv[2], sys.argv[3]
loader = make(out, num_workers=2, batch_size=1)
it = iter(loader)
next(it)
print(json.dumps({"workers": [w.pid for w in loader._active._workers]}), flush=True)
if mode == "raise":
    next(it)
    raise RuntimeError("training step failed")
if mode == "kill":
    time.sleep(600)
for _ in it:
    pass
"""


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks /proc and /dev/shm")
@pytest.mark.parametrize("mode", ["normal", "raise", "kill"])
def test_no_memory_left_behind(toy_shards, mode):
    """Workers and their shared memory go away with the trainer, however it ends."""
    before = shm_entries()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), mode, str(toy_shards.out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = json.loads(proc.stdout.readline())["workers"] + [proc.pid]
    if mode == "kill":
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    if mode == "normal":
        assert proc.returncode == 0, proc.stderr.read()
    deadline = time.monotonic() + 60  # orphaned DataLoader workers notice the parent's death within seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(alive(p) for p in pids), "a loader process outlived the trainer"
    ours = [e for e in shm_entries() - before if any(str(p) in e for p in pids) or "flair" in e or e.startswith("psm_")]
    assert not ours, f"left in /dev/shm: {ours}"
