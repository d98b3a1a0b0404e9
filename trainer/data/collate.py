"""Compact samples -> one batch laid out in one flat buffer, padding variable-length series with a mask.

Arrays keep the samples' compact dtypes (uint8 / uint16 / float32, uint8 class maps, int32 day
offsets): this is what crosses from a loader process to the training process, so every byte saved
here is a byte not copied. `trainer.data.normalize.to_model_inputs` turns the batch into the
model's float32 / int64 inputs afterwards, on the device.

A batch lives in one contiguous buffer (`BatchLayout`): first the fixed-shape arrays (mono
inputs, tasks) at offsets known before any sample is decoded, so each decoding thread writes its
sample straight into its row (`BatchBuilder.put`); then the series, placed once the batch's
longest series is known (`BatchBuilder.finish`). The buffer is a slot of the shared-memory ring
(`trainer.data.handover`) or private memory; `batch_from_buffer` rebuilds the tensors as views.

Nothing is cast: every sample must have exactly the dtype and shape the layout expects
(learnt from a first sample, itself checked against the pack's schema by the reader), otherwise
`BatchLayoutError` names the patch and the modality.

Batch layout (B samples):
- `patch_id`: list of str; `valid`: (B,) bool, False for the padding repeats that equalise ranks
  (and for samples left out with `data.on_error: skip`);
- each mono-temporal input: (B, C, H, W);
- each series `<S>_TS`: (B, T, C, H, W) zero-padded to the longest series of the batch, with
  `<S>_DATES` (B, T) day offsets (0 on padding, as the reference pads) and `<S>_PAD_MASK` (B, T)
  bool, True on padding: past the sample's series length, or a date holding only `pad_value`
  (the sample's own `<S>_PAD_MASK`, the reference U-TAE's value rule);
- each task: (B, H, W) class indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from trainer.data.sample import SampleSpec, dates_key, pad_mask_key

ALIGN = 64


class BatchLayoutError(ValueError):
    """A sample does not fit the batch (dtype or shape): never cast or broadcast silently."""


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class BatchLayout:
    """Where each array of a batch of `batch_size` lives in one flat buffer."""

    batch_size: int
    fixed: tuple[tuple[str, tuple[int, ...], str], ...]  # (key, per-sample shape, dtype str)
    series: tuple[tuple[str, tuple[int, ...], str], ...]  # (key, per-date shape, dtype str)
    augment: bool = False

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], spec: SampleSpec, batch_size: int) -> "BatchLayout":
        """The layout of batches of samples shaped like `sample` (a preprocessed sample)."""
        fixed = tuple((k, tuple(sample[k].shape), sample[k].dtype.str) for k in (*spec.mono, *spec.tasks))
        series = tuple((k, tuple(sample[k].shape[1:]), sample[k].dtype.str) for k in spec.series)
        return cls(batch_size, fixed, series, spec.augment)

    @cached_property
    def fixed_offsets(self) -> dict[str, int]:
        out, pos = {}, 0
        for key, shape, dtype in self.fixed:
            out[key] = pos
            pos += _aligned(self.batch_size * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        return out

    @cached_property
    def fixed_bytes(self) -> int:
        return sum(_aligned(self.batch_size * int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize)
                   for _, s, d in self.fixed)

    def series_bytes(self, t_max: Mapping[str, int]) -> int:
        return sum(_aligned(self.batch_size * t_max.get(k, 0) * int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize)
                   for k, s, d in self.series)

    def nbytes(self, t_max: Mapping[str, int]) -> int:
        """Buffer size for a batch whose longest series have `t_max` dates."""
        return self.fixed_bytes + self.series_bytes(t_max)

    def check(self, sample: Mapping[str, Any]) -> None:
        """Raise BatchLayoutError naming patch and modality if `sample` does not fit exactly."""
        pid = sample.get("patch_id", "?")
        for key, shape, dtype in self.fixed:
            arr = sample[key]
            if arr.dtype.str != dtype or tuple(arr.shape) != shape:
                raise BatchLayoutError(f"{pid}: {key} is {arr.dtype}{list(arr.shape)}, the batch holds "
                                       f"{np.dtype(dtype)}{list(shape)} (no silent cast or broadcast)")
        for key, shape, dtype in self.series:
            arr = sample[key]
            if arr.dtype.str != dtype or arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
                raise BatchLayoutError(f"{pid}: {key} is {arr.dtype}{list(arr.shape)}, the batch holds "
                                       f"{np.dtype(dtype)}[T, {', '.join(map(str, shape))}] (no silent cast or broadcast)")


@dataclass
class BatchBuilder:
    """Fills one batch in `buffer` (flat uint8, at least `layout.fixed_bytes` long), row by row.

    `put(i, sample)` may run in several threads at once (distinct rows); `finish()` runs once
    all rows are in.
    """

    layout: BatchLayout
    buffer: np.ndarray
    patch_ids: list[str]
    valid: np.ndarray
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # row -> what finish() still needs

    def _fixed(self, key: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        off = self.layout.fixed_offsets[key]
        n = self.layout.batch_size * int(np.prod(shape, dtype=np.int64))
        return self.buffer[off: off + n * np.dtype(dtype).itemsize].view(dtype).reshape(self.layout.batch_size, *shape)

    def put(self, i: int, sample: Mapping[str, Any]) -> None:
        """Write sample `i`'s fixed-shape arrays into its row; keep copies of the rest for finish()."""
        self.layout.check(sample)
        for key, shape, dtype in self.layout.fixed:
            np.copyto(self._fixed(key, shape, dtype)[i], sample[key], casting="no")
        rest = {k: np.array(sample[k]) for k, _, _ in self.layout.series}  # own copies: inputs may be reused
        rest.update({dates_key(k): np.asarray(sample[dates_key(k)], dtype=np.int32) for k, _, _ in self.layout.series})
        rest.update({pad_mask_key(k): np.asarray(sample[pad_mask_key(k)], dtype=bool)
                     for k, _, _ in self.layout.series if sample.get(pad_mask_key(k)) is not None})
        if self.layout.augment:
            rest["augment"] = tuple(sample["augment"])
        rest["patch_id"] = sample["patch_id"]
        self.rows[i] = rest

    def copy_row(self, src: int, dst: int) -> None:
        """Fill row `dst` with row `src`'s sample (a stand-in for a sample left out)."""
        for key, shape, dtype in self.layout.fixed:
            arr = self._fixed(key, shape, dtype)
            arr[dst] = arr[src]
        self.rows[dst] = dict(self.rows[src])

    def finish(self, buffer: np.ndarray | None = None) -> "BatchParts":
        """Place the series (zero-padded to the batch's longest) and gather the small arrays.

        `buffer`, when given, replaces the current one (a larger buffer for long series; the
        fixed part is copied over).
        """
        b = self.layout.batch_size
        if sorted(self.rows) != list(range(b)):
            raise ValueError(f"batch of {b} has rows {sorted(self.rows)}")
        t_max = self.t_max()
        if buffer is not None:
            buffer[: self.layout.fixed_bytes] = self.buffer[: self.layout.fixed_bytes]
            self.buffer = buffer
        arrays = {key: (off, (b, *shape), dtype)
                  for (key, shape, dtype), off in zip(self.layout.fixed, self.layout.fixed_offsets.values())}
        small: dict[str, np.ndarray] = {}
        pos = self.layout.fixed_bytes
        for key, shape, dtype in self.layout.series:
            t = t_max[key]
            n = b * t * int(np.prod(shape, dtype=np.int64))
            out = self.buffer[pos: pos + n * np.dtype(dtype).itemsize].view(dtype).reshape(b, t, *shape)
            mask = np.ones((b, t), dtype=bool)
            dates = np.zeros((b, t), dtype=np.int32)
            for i in range(b):
                arr = self.rows[i][key]
                out[i, : len(arr)] = arr
                out[i, len(arr):] = 0  # the buffer is reused: padding must be written, not assumed
                mask[i, : len(arr)] = False
                empty = self.rows[i].get(pad_mask_key(key))  # dates averaged from nothing but padding
                if empty is not None:
                    mask[i, : len(empty)] |= empty
                dates[i, : len(arr)] = self.rows[i][dates_key(key)]
            arrays[key] = (pos, (b, t, *shape), dtype)
            small[dates_key(key)] = dates
            small[pad_mask_key(key)] = mask
            pos += _aligned(n * np.dtype(dtype).itemsize)
        if self.layout.augment:
            small["augment"] = np.array([list(self.rows[i]["augment"]) for i in range(b)], dtype=np.int8)
        return BatchParts(patch_ids=[self.rows[i]["patch_id"] for i in range(b)], valid=np.asarray(self.valid, bool),
                          arrays=arrays, small=small, nbytes=pos)

    def t_max(self) -> dict[str, int]:
        return {key: max((len(r[key]) for r in self.rows.values()), default=0) for key, _, _ in self.layout.series}


@dataclass
class BatchParts:
    """A finished batch, minus its buffer: what crosses the process boundary (a few hundred bytes)."""

    patch_ids: list[str]
    valid: np.ndarray
    arrays: dict[str, tuple[int, tuple[int, ...], str]]  # key -> (offset in the buffer, shape, dtype)
    small: dict[str, np.ndarray]  # dates, pad masks, augmentation draws
    nbytes: int


def batch_from_buffer(parts: BatchParts, buffer: np.ndarray, order: Sequence[str]) -> dict[str, Any]:
    """The batch dict (see the module docstring) with tensors viewing `buffer` (no copy)."""
    batch: dict[str, Any] = {"patch_id": list(parts.patch_ids), "valid": torch.from_numpy(parts.valid)}
    for key in order:
        if key in parts.arrays:
            off, shape, dtype = parts.arrays[key]
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            batch[key] = torch.from_numpy(buffer[off: off + n].view(dtype).reshape(shape))
        for extra in (dates_key(key), pad_mask_key(key)):
            if key.endswith("_TS") and extra in parts.small:
                batch[extra] = torch.from_numpy(parts.small[extra])
    if "augment" in parts.small:
        batch["augment"] = torch.from_numpy(parts.small["augment"])
    return batch


def batch_keys(spec: SampleSpec) -> tuple[str, ...]:
    """Batch keys in the order batches list them (mono inputs, series, tasks)."""
    return (*spec.mono, *spec.series, *spec.tasks)


def collate(samples: Sequence[dict[str, Any]], spec: SampleSpec, valid: Sequence[bool] | None = None) -> dict[str, Any]:
    """Batch compact samples into fresh memory (see the module docstring for the layout)."""
    layout = BatchLayout.from_sample(samples[0], spec, len(samples))
    builder = BatchBuilder(layout, np.empty(layout.fixed_bytes, np.uint8), [s["patch_id"] for s in samples],
                           np.ones(len(samples), bool) if valid is None else np.asarray(valid, bool))
    for i, s in enumerate(samples):
        builder.put(i, s)
    buffer = np.empty(layout.nbytes(builder.t_max()), np.uint8)
    parts = builder.finish(buffer)
    return batch_from_buffer(parts, buffer, batch_keys(spec))
