"""Batched normalisation equals the reference's per-sample float64 arithmetic, for every dtype path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import preprocess as pp
from trainer.data.normalize import normalize_batch
from trainer.data.sample import SampleSpec


def spec(norm_type: str) -> SampleSpec:
    return SampleSpec(inputs=("X",), tasks=(), channels={}, label_channels={}, norm_type=norm_type,
                      means={"X": (106.59, 105.66, 111.35)}, stds={"X": (39.78, 52.23, 45.62)})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("norm_type", ["custom", "scaling", "without"])
def test_batched_equals_per_sample(dtype, norm_type):
    rng = np.random.default_rng(0)
    hi = 255 if dtype == np.uint8 else 3000
    x = (rng.random((4, 3, 16, 16)) * hi).astype(dtype)
    s = spec(norm_type)
    got = normalize_batch(torch.from_numpy(x), "X", s)
    want = np.stack([pp.normalize(x[i], norm_type, s.means["X"], s.stds["X"]) for i in range(4)]).astype(np.float32)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)
    if norm_type == "custom" and dtype != np.uint8:
        fast = normalize_batch(torch.from_numpy(x), "X", s, exact=False).numpy()
        np.testing.assert_allclose(fast, want, rtol=1e-5, atol=1e-5)
        assert not np.array_equal(fast, want) or dtype == np.float32  # the fast path is not the exact one


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("norm_type", ["custom", "scaling"])
@pytest.mark.parametrize("hw", [(181, 211), (301, 250)])
def test_cpu_steps_equal_the_whole_batch_float64_arithmetic(dtype, norm_type, hw):
    """Planes longer than one step, a ragged last step, a non-contiguous input, NaN and inf kept.

    An odd plane (38,191 values: uint8 too goes through the float64 steps) and an even one (75,250
    values: uint8 goes through the pixel-pair table, 37,625 pairs, again over one step).
    """
    rng = np.random.default_rng(1)
    hi = 256 if dtype == np.uint8 else 60000 if dtype == np.uint16 else 4000
    x = (rng.random((3, 5, *hw)) * hi).astype(dtype)
    if dtype == np.float32:
        x[0, 0, :3, :3] = [np.nan, np.inf, -np.inf]
        x[1] -= 1000.5  # negative elevations
    t = torch.from_numpy(x)[:, [4, 0, 2]]  # a channel selection: not contiguous
    s = SampleSpec(inputs=("X",), tasks=(), channels={}, label_channels={}, norm_type=norm_type,
                   means={"X": (106.59, 105.66, 111.35)}, stds={"X": (39.78, 52.23, 45.62)})
    got = normalize_batch(t, "X", s)
    x64 = t.numpy().astype(np.float64)
    if norm_type == "custom":
        want = ((x64 - np.array(s.means["X"]).reshape(1, 3, 1, 1)) / np.array(s.stds["X"]).reshape(1, 3, 1, 1))
    else:
        want = x64 * (1.0 / np.iinfo(dtype).max) if dtype != np.float32 else x64
    assert got.dtype == torch.float32 and got.shape == t.shape
    assert got.numpy().tobytes() == want.astype(np.float32).tobytes()


def test_an_empty_batch_gives_an_empty_float32_batch():
    s = spec("custom")
    for dtype in (torch.uint8, torch.float32):
        got = normalize_batch(torch.zeros((0, 3, 8, 8), dtype=dtype), "X", s)
        assert got.shape == (0, 3, 8, 8) and got.dtype == torch.float32
