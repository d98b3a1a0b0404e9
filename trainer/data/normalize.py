"""Batched type conversion and normalisation: compact batch -> the model's inputs, on any device.

The reference normalises every sample in float64 with numpy, then casts to float32. Doing the
same arithmetic (float64 subtract, float64 divide, one rounding to float32) on a whole batch, after
the compact tensors have crossed the process boundary and reached the device, gives bit-identical
values for far less work and far fewer bytes moved. `exact=False` trades that identity for a
float32 fused multiply-add (differences of about 1 ulp) where float64 is slow.

On CPU, where the batch is already, the same values come from cache-sized float64 steps (or, for
uint8, a table of pixel pairs) written into pooled outputs: see `_float64_steps` and `OutputPool`.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Mapping

import numpy as np
import torch

from trainer.data.sample import SampleSpec, dates_key, pad_mask_key


def _stats(values: tuple[float, ...], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values[:n], dtype=dtype, device=device).view(1, n, 1, 1)


# float64 values per step of the CPU path: 256 KiB, which stays in a core's L2 cache across the
# step's three passes (convert-and-subtract, divide, round to float32).
_STEP = 1 << 15
_scratch = threading.local()


def _float64_steps(x: torch.Tensor, out: torch.Tensor, sub: tuple[float, ...] | None = None,
                   div: tuple[float, ...] | None = None, mul: float | None = None) -> torch.Tensor:
    """float32 of `(x - sub[c]) / div[c]` per channel `c`, or of `x * mul`, computed in float64, on CPU.

    The reference's arithmetic exactly (exact conversion to float64, float64 subtract and divide,
    one rounding to float32), but in cache-sized steps through one reused float64 buffer: a
    whole-batch float64 temporary is 2x the input's float32 size, written and read back from
    memory, and newly allocated pages at every batch. numpy releases the GIL in each step, so
    decode threads run meanwhile.
    """
    xs = x.numpy()
    b, c = xs.shape[:2]
    if xs.size == 0:
        return out
    planes = xs.reshape(b * c, -1)  # a copy only if x is not contiguous
    dst_planes = out.numpy().reshape(b * c, -1)  # out is a new or pooled contiguous float32 tensor
    if xs.dtype == np.uint8 and planes.shape[1] % 2 == 0 and sys.byteorder == "little":
        tables = _uint8_pair_tables(None, None, mul) if mul is not None else _uint8_pair_tables(sub, div, None)
        _uint8_pair_lookup(np.ascontiguousarray(planes), dst_planes, tables, 1 if mul is not None else c)
        return out
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = np.empty(_STEP, np.float64)
    n = planes.shape[1]
    for i in range(b * c):
        src, dst, ch = planes[i], dst_planes[i], i % c
        for s in range(0, n, _STEP):
            e = min(n, s + _STEP)
            v = buf[: e - s]
            # dtype=float64 picks the float64 loop for float32 inputs too (numpy 2 would otherwise
            # compute float32 - python float in float32).
            if mul is not None:
                np.multiply(src[s:e], mul, out=v, dtype=np.float64)
            else:
                np.subtract(src[s:e], sub[ch], out=v, dtype=np.float64)
                np.divide(v, div[ch], out=v, dtype=np.float64)
            dst[s:e] = v
    return out


@functools.lru_cache(maxsize=16)
def _uint8_pair_tables(sub: tuple[float, ...] | None, div: tuple[float, ...] | None,
                       mul: float | None) -> np.ndarray:
    """Per channel, the float32 results of every pair of adjacent uint8 pixels, as one uint64 each.

    A uint8 channel has 256 possible values, so its 256 results -- computed once with the
    reference's float64 arithmetic -- are all of its results, and a lookup is exact. Looking up
    two pixels at a time (the pair read as one little-endian uint16: first pixel in the low byte)
    halves the lookups: 0.53 ns a pixel against 1.05 for the float64 arithmetic, measured. 512 KiB
    a channel, which stays in L2.
    """
    values = np.arange(256, dtype=np.float64)
    if mul is not None:
        single = (values * mul).astype(np.float32)[None, :]
    else:
        single = ((values[None, :] - np.asarray(sub)[:, None]) / np.asarray(div)[:, None]).astype(np.float32)
    pairs = np.empty((single.shape[0], 256, 256, 2), np.float32)  # [channel, second pixel, first pixel]
    pairs[..., 0] = single[:, None, :]
    pairs[..., 1] = single[:, :, None]
    return pairs.reshape(single.shape[0], 65536 * 2).view(np.uint64)


def _uint8_pair_lookup(planes: np.ndarray, dst_planes: np.ndarray, tables: np.ndarray, c: int) -> None:
    """dst_planes[i] = the table of channel i % c looked up pixel pair by pixel pair, in L2-sized steps."""
    n = planes.shape[1] // 2
    pairs, results = planes.view(np.uint16), dst_planes.view(np.uint64)
    for i in range(planes.shape[0]):
        table = tables[i % c]
        for s in range(0, n, _STEP):
            e = min(n, s + _STEP)
            np.take(table, pairs[i, s:e], out=results[i, s:e])


def normalize_batch(x: torch.Tensor, name: str, spec: SampleSpec, exact: bool = True,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """`normalization.norm_type` applied to a `(B, C, H, W)` mono-temporal input, returning float32.

    On CPU, with `exact`, the result is written into `out` when given (a contiguous float32
    tensor of x's shape, as `OutputPool.take` hands out); elsewhere `out` is ignored.
    """
    n = x.shape[1]
    if exact and x.device.type == "cpu" and x.dim() >= 2:
        if out is None:
            out = torch.empty(x.shape, dtype=torch.float32)
        if spec.norm_type == "custom":
            return _float64_steps(x, out, sub=tuple(map(float, spec.means[name][:n])),
                                  div=tuple(map(float, spec.stds[name][:n])))
        if spec.norm_type == "scaling" and not x.dtype.is_floating_point:
            return _float64_steps(x, out, mul=1.0 / torch.iinfo(x.dtype).max)
        return out.copy_(x)
    if spec.norm_type == "custom":
        if exact:
            y = x.to(torch.float64)
            y.sub_(_stats(spec.means[name], n, torch.float64, x.device))
            y.div_(_stats(spec.stds[name], n, torch.float64, x.device))
            return y.to(torch.float32)
        mean = _stats(spec.means[name], n, torch.float64, x.device)
        std = _stats(spec.stds[name], n, torch.float64, x.device)
        return torch.addcmul((-mean / std).float(), x.float(), (1.0 / std).float())
    if spec.norm_type == "scaling" and not x.dtype.is_floating_point:
        scale = 1.0 / torch.iinfo(x.dtype).max
        if exact:
            return (x.to(torch.float64) * scale).to(torch.float32)
        return x.float() * scale
    return x.float()


def _holders(t: torch.Tensor) -> tuple[int, int] | None:
    """(Python references, storage uses) of `t`, or None on a torch without the storage counter."""
    try:
        return sys.getrefcount(t), torch._C._storage_Use_Count(t.untyped_storage()._cdata)
    except (AttributeError, RuntimeError):
        return None


def _free_counts() -> tuple[int, int] | None:
    """`_holders` of a tensor that only a list holds, seen as `OutputPool.take` sees its tensors:
    from a for loop over the list. Measured rather than written down (on CPython 3.11 and torch
    2.14 it counts the list, the loop variable and the two call arguments; the tensor and the
    storage object `untyped_storage()` returns), because other Python and torch versions count
    borrowed references differently. None (never reuse) without the storage counter."""
    for t in [torch.empty(1)]:
        return _holders(t)
    return None


class OutputPool:
    """CPU tensors of earlier batches' model inputs, reused once the training loop has let go of them.

    On CPU, freshly allocated tensors of a few MB come from new pages each time (glibc hands large
    blocks back to the kernel), and faulting them in cost more than the arithmetic written into
    them: 2 of the 5.6 ms per sample that `to_model_inputs` took on the all-inputs benchmark.

    A tensor is handed out again only when no one else holds it, so a kept batch, one tensor of
    it, a view or autograd's saved inputs keep their values and the pool allocates another; a
    usual loop (`inputs = ...` at each step, the previous dict alive during the call) settles on
    two sets. "No one else" takes two counts: Python references (a kept dict or tensor,
    `t.numpy()`, and autograd's saved tensors, since torch keeps a tensor's Python object alive
    while C++ holds it) and the storage's (views, `.data`). A torch without the storage counter
    never reuses. GPUs have a caching allocator and do not use this.
    """

    def __init__(self, per_key: int = 3) -> None:
        self.per_key = per_key
        self._tensors: dict[tuple[str, tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
        self._free_counts = _free_counts()

    def take(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        held = self._tensors.setdefault((key, tuple(shape), dtype), [])
        for t in held:
            counts = _holders(t)
            if counts is not None and counts == self._free_counts:
                return t
        t = torch.empty(shape, dtype=dtype)
        if len(held) < self.per_key:
            held.append(t)
        return t


def to_model_inputs(
    batch: Mapping[str, Any], spec: SampleSpec, device: torch.device | str = "cpu", exact: bool = True,
    pool: OutputPool | None = None,
) -> dict[str, Any]:
    """Move a collated batch to `device` and finish it: the reference's values, the model's dtypes.

    Mono inputs -> normalised float32; series -> float32 with float32 day offsets and a bool pad
    mask; labels -> int64 class maps; `patch_id` and `valid` are passed along. On CPU the results
    are written into `pool`'s tensors when one is given.
    """
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    pool = pool if device.type == "cpu" and exact else None

    def into(key: str, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if pool is None:
            return x.to(device, dtype=dtype, non_blocking=non_blocking)
        return pool.take(key, x.shape, dtype).copy_(x)

    out: dict[str, Any] = {"patch_id": batch["patch_id"], "valid": batch["valid"].to(device, non_blocking=non_blocking)}
    for name in spec.mono:
        x = batch[name].to(device, non_blocking=non_blocking)
        buf = pool.take(name, x.shape, torch.float32) if pool is not None else None
        out[name] = normalize_batch(x, name, spec, exact, out=buf)
    for name in spec.series:
        out[name] = into(name, batch[name], torch.float32)
        out[dates_key(name)] = into(dates_key(name), batch[dates_key(name)], torch.float32)
        out[pad_mask_key(name)] = batch[pad_mask_key(name)].to(device, non_blocking=non_blocking)
    for task in spec.tasks:
        out[task] = into(task, batch[task], torch.int64)
    lease = getattr(batch, "lease", None)
    if lease is not None and non_blocking:
        # The copies above read the batch's ring slot asynchronously: the slot is not handed back
        # to its worker before they are done (trainer.data.handover.Lease).
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        lease.after(event)
    return out
