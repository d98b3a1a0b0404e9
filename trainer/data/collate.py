"""Compact samples -> one batch of tensors, padding variable-length series with a mask.

Tensors keep the samples' compact dtypes (uint8 / uint16 / float32, uint8 class maps, int32 day
offsets): this is what crosses from a loader process to the training process, so every byte
saved here is a byte not copied through shared memory. `trainer.data.normalize.to_model_inputs`
turns the batch into the model's float32 / int64 inputs afterwards.

Batch layout (B samples):
- `patch_id`: list of str; `valid`: (B,) bool, False for the padding repeats that equalise ranks;
- each mono-temporal input: (B, C, H, W);
- each series `<S>_TS`: (B, T, C, H, W) zero-padded to the longest series of the batch, with
  `<S>_DATES` (B, T) day offsets (0 on padding, as the reference pads) and `<S>_PAD_MASK` (B, T)
  bool, True on padding: past the sample's series length, or a date holding only `pad_value`
  (the sample's own `<S>_PAD_MASK`, the reference U-TAE's value rule);
- each task: (B, H, W) class indices.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from trainer.data.sample import SampleSpec, dates_key, pad_mask_key


def _alloc(shape: tuple[int, ...], dtype: np.dtype, shared: bool, fill: float | None = None) -> np.ndarray:
    """A batch array; in a DataLoader worker it lives in shared memory from the start.

    The DataLoader hands a tensor to the main process by moving its storage into shared memory,
    a full copy, unless it is already there: allocating it there saves that copy.
    """
    if shared:
        t = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype).share_memory_()
        arr = t.numpy()
    else:
        arr = np.empty(shape, dtype=dtype)
    if fill is not None:
        arr.fill(fill)
    return arr


def stack(arrays: Sequence[np.ndarray], shared: bool = False) -> torch.Tensor:
    out = _alloc((len(arrays), *arrays[0].shape), arrays[0].dtype, shared)
    for i, a in enumerate(arrays):
        out[i] = a
    return torch.from_numpy(out)


def pad_series(arrays: Sequence[np.ndarray], pad_value: float = 0, shared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stack `(T_i, C, H, W)` series into `(B, T_max, C, H, W)`; returns it and the `(B, T_max)` pad mask."""
    t_max = max((a.shape[0] for a in arrays), default=0)
    shape = arrays[0].shape[1:]
    out = _alloc((len(arrays), t_max, *shape), arrays[0].dtype, shared, fill=pad_value)
    mask = np.ones((len(arrays), t_max), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = False
    return out, mask


def pad_dates(offsets: Sequence[np.ndarray], t_max: int) -> np.ndarray:
    out = np.zeros((len(offsets), t_max), dtype=np.int32)
    for i, o in enumerate(offsets):
        out[i, : len(o)] = o
    return out


def collate(samples: Sequence[dict[str, Any]], spec: SampleSpec, valid: Sequence[bool] | None = None,
            shared: bool = False) -> dict[str, Any]:
    """Batch compact samples (see the module docstring for the layout).

    `shared=True` (set inside DataLoader workers) allocates the large tensors in shared memory.
    """
    batch: dict[str, Any] = {"patch_id": [s["patch_id"] for s in samples]}
    batch["valid"] = torch.as_tensor(np.ones(len(samples), dtype=bool) if valid is None else np.asarray(valid, dtype=bool))
    for name in spec.mono:
        batch[name] = stack([s[name] for s in samples], shared)
    for name in spec.series:
        values, mask = pad_series([s[name] for s in samples], shared=shared)
        for i, s in enumerate(samples):
            empty = s.get(pad_mask_key(name))
            if empty is not None:
                mask[i, : len(empty)] |= empty
        batch[name] = torch.from_numpy(values)
        batch[dates_key(name)] = torch.from_numpy(pad_dates([s[dates_key(name)] for s in samples], values.shape[1]))
        batch[pad_mask_key(name)] = torch.from_numpy(mask)
    for task in spec.tasks:
        batch[task] = stack([s[task] for s in samples], shared)
    if spec.augment:
        batch["augment"] = torch.tensor([list(s["augment"]) for s in samples], dtype=torch.int8)
    return batch
