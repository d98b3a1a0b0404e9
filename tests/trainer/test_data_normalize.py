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
