"""Model stand-ins with a known answer, for tests and for timing reads and writes without a network.

`CopyBandModel` follows the model's forward contract (`trainer.model.flair_uperfuse`) and
"predicts" the class written in one band of one input: its logits are the one-hot encoding of
that band's value (rounded, clipped to the class range), upsampled by nearest neighbour to the
requested size. A pipeline that tiles, crops and mosaics correctly therefore reproduces the band
exactly; any seam, offset or edge error shows up as a wrong pixel.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


class CopyBandModel(torch.nn.Module):
    """Logits = one-hot(band `band` (0-based) of `modality`) for each task, at `out_size`.

    The class is the band's value rounded, then clipped to the class range, or taken modulo the
    class count with `modulo=True` (so 8-bit imagery maps onto 19 classes without saturating).
    """

    def __init__(self, modality: str, band: int, n_classes: Mapping[str, int], date: int | None = None,
                 modulo: bool = False) -> None:
        super().__init__()
        self.modality, self.band, self.n_classes, self.date = modality, band, dict(n_classes), date
        self.modulo = modulo
        self.calls = 0

    def forward(self, batch: Mapping[str, Tensor], dates: Any = None, pad_masks: Any = None, *,
                out_size: int | tuple[int, int] | None = None, **_: Any) -> dict[str, Tensor]:
        self.calls += 1
        x = batch[self.modality]
        if x.dim() == 5:  # a series: (B, T, C, H, W) -> the chosen date
            x = x[:, self.date or 0]
        plane = x[:, self.band : self.band + 1].float()
        if out_size is not None:
            size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
            plane = F.interpolate(plane, size=size, mode="nearest")
        out = {}
        for task, n in self.n_classes.items():
            value = plane[:, 0].round().long()
            cls = value.remainder(n) if self.modulo else value.clamp(0, n - 1)
            out[task] = F.one_hot(cls, n).permute(0, 3, 1, 2).float() * 10.0
        return out


class FailOnCalls(torch.nn.Module):
    """Wraps a model and raises on the given call numbers (1-based): a tile-level failure on demand."""

    def __init__(self, inner: torch.nn.Module, calls: set[int]) -> None:
        super().__init__()
        self.inner, self.fail_calls, self.calls = inner, set(calls), 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RuntimeError(f"stand-in failure on call {self.calls}")
        return self.inner(*args, **kwargs)
