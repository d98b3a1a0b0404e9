"""Checkpoint files: atomic writes, clear errors for bad files, RNG and progress round trips."""

import random

import numpy as np
import pytest
import torch

from trainer.train_checkpoint import (
    CheckpointError, Progress, atomic_torch_save, build_checkpoint, capture_rng, check_model_state,
    load_checkpoint, restore_rng,
)


def _ckpt(model=None):
    model = model or torch.nn.Linear(2, 3)
    return build_checkpoint(weights_only=True, model_state=model.state_dict(), progress=Progress(epoch=2, step=9),
                            config_yaml="a: 1\n")


def test_round_trip_with_weights_only_loading(tmp_path):
    path = atomic_torch_save(_ckpt(), tmp_path / "last.ckpt")
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == "weights" and ckpt["progress"]["step"] == 9 and ckpt["config_yaml"] == "a: 1\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = atomic_torch_save(_ckpt(), tmp_path / "last.ckpt")
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"x": Unsaveable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_missing_truncated_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = atomic_torch_save(_ckpt(), tmp_path / "good.ckpt")
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt: unreadable or truncated"):
        load_checkpoint(bad)
    foreign = tmp_path / "plain.pth"
    torch.save(torch.nn.Linear(2, 3).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a flair-stream training checkpoint"):
        load_checkpoint(foreign)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "flair-stream-train-ckpt", "obj": Progress()}, path)  # a class instance: needs unpickling
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_model_state_mismatch_names_the_keys():
    with pytest.raises(CheckpointError, match=r"weight: \(3, 2\) vs \(4, 2\)"):
        check_model_state(torch.nn.Linear(2, 4), torch.nn.Linear(2, 3).state_dict(), "x.ckpt")
    with pytest.raises(CheckpointError, match="missing: bias"):
        check_model_state(torch.nn.Linear(2, 3), {"weight": torch.zeros(3, 2)}, "x.ckpt")


def test_rng_state_round_trip_survives_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = atomic_torch_save({"rng": capture_rng()}, tmp_path / "rng.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_progress_tracks_best_and_patience():
    p = Progress()
    assert p.improved(0.5, "max") and p.best_value == 0.5
    assert not p.improved(0.4, "max") and p.bad_evals == 1
    assert not p.improved(0.5, "max") and p.bad_evals == 2  # equal is not better (min_delta 0)
    p.epoch = 3
    assert p.improved(0.6, "max") and p.bad_evals == 0 and p.best_epoch == 3
    q = Progress()
    assert q.improved(2.0, "min") and q.improved(1.0, "min") and not q.improved(1.5, "min")
    assert Progress.from_state(p.state_dict()) == p
