"""Random batches in the loader's contract, for model tests and benchmarks without data.

Mono-temporal inputs `(B, C, H, W)`, series `(B, T, C, H, W)` float32 padded along T with
`pad_value`, day offsets `(B, T)` and pad masks `(B, T)` (True = padding), keyed by modality name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .spec import ModelSpec


@dataclass
class SyntheticBatch:
    inputs: dict[str, Tensor]
    dates: dict[str, Tensor]
    pad_masks: dict[str, Tensor]


def synthetic_batch(
    spec: ModelSpec,
    batch_size: int = 2,
    lengths: list[int] | None = None,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
) -> SyntheticBatch:
    """One batch for `spec`'s inputs; `lengths[i]` = number of real dates of item i (rest padded)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths or [3] * batch_size
    if len(lengths) != batch_size:
        raise ValueError("one length per batch item")
    t_max = max(lengths)
    pad_value = spec.utae.pad_value if spec.utae is not None else 0.0
    inputs, dates, masks = {}, {}, {}
    for mod in spec.mono:
        s = (sizes or spec.input_sizes)[mod]
        inputs[mod] = torch.randn(batch_size, spec.in_channels[mod], s, s, generator=gen)
    for mod in spec.multi:
        s = (sizes or spec.input_sizes)[mod]
        # Values kept away from pad_value so no real date looks like padding.
        series = torch.rand(batch_size, t_max, spec.in_channels[mod], s, s, generator=gen) + 0.5 + pad_value
        day = torch.sort(torch.randint(0, 366, (batch_size, t_max), generator=gen), dim=1).values.float()
        mask = torch.zeros(batch_size, t_max, dtype=torch.bool)
        for i, n in enumerate(lengths):
            series[i, n:] = pad_value
            day[i, n:] = 0
            mask[i, n:] = True
        inputs[mod], dates[mod], masks[mod] = series, day, mask
    return SyntheticBatch(inputs, dates, masks)
