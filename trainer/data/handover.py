"""Batch hand-over from loader processes to the training process through preallocated shared memory.

A `BatchRing` is one shared mapping cut into slots, each big enough for one batch
(`trainer.data.collate.BatchLayout`). DataLoader worker w owns slots `[w*k, (w+1)*k)`: it
writes a batch straight into a free slot (each decoding thread fills its sample's row) and
yields only a small description (`Handed`: slot number, offsets, patch ids, a few hundred
bytes of dates and masks). The training process turns that into tensors that view the slot
(`BatchRing.lend`), with no copy, no pickled arrays and no per-tensor shared-memory segment;
the slot goes back to its worker once every tensor viewing it is gone (a finalizer on the
slot's buffer object), and, on a GPU, once the copies to the device that read it are done.
The same slots serve a loader without workers: batches are then built in reused memory, so
no page is faulted in twice.

Why: handing a 4.5 MB-per-sample batch to the trainer by pickling or through torch's per-tensor
shared memory costs a fresh mapping per tensor per batch, page faults on both sides, and a
copy in the worker; measured as the largest stage of the old loader (docs/loading.md). Here
the pages of a slot are touched once and then reused for the whole run.

Memory never outlives the processes: the mapping is an anonymous `memfd` (Linux; no name in
/dev/shm, nothing to unlink), inherited by forked workers or passed to spawned ones as a file
descriptor, and freed by the kernel when the last process holding it exits, whether it ends
normally, raises or is killed. When a slot is not free (the training loop keeps many batches
alive) or a batch is larger than a slot, the worker falls back to a private buffer in torch's
shared memory for that batch: slower, never blocking, never wrong.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from dataclasses import dataclass, field
from multiprocessing import reduction
from typing import Any

import numpy as np

FREE, BUSY = 0, 1
PAGE = mmap.PAGESIZE


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass
class Handed:
    """What a loader process yields for one batch (pickled to the training process: small)."""

    parts: Any = None  # trainer.data.collate.BatchParts
    slot: int | None = None  # ring slot holding the arrays, or
    buffer: Any = None  # a private buffer (torch shared-memory tensor in a worker, numpy array in-process)
    skipped: list[str] = field(default_factory=list)  # one line per sample left out (data.on_error: skip)
    error: BaseException | None = None  # a data error to raise in the training process, as it is


class Lease:
    """The training process's hold on one slot: the slot is released once this object is finalised.

    Device copies that read the slot asynchronously register an event (`after`), waited for
    before the slot is handed back to its worker.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []

    def after(self, event: Any) -> None:
        self.events.append(event)

    def wait(self) -> None:
        for e in self.events:
            e.synchronize()
        self.events.clear()


class BatchRing:
    """`groups` x `slots_per_group` batch slots of `slot_bytes` each in one shared mapping."""

    def __init__(self, groups: int, slots_per_group: int, slot_bytes: int) -> None:
        self.groups, self.slots_per_group = int(groups), int(slots_per_group)
        self.n_slots = self.groups * self.slots_per_group
        self.slot_bytes = _round_up(max(int(slot_bytes), 1), PAGE)
        self.header = _round_up(self.n_slots, PAGE)
        self.size = self.header + self.n_slots * self.slot_bytes
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("flair-batch-ring", os.MFD_CLOEXEC)
            os.ftruncate(self._fd, self.size)
            self._mm = mmap.mmap(self._fd, self.size)
        else:  # shared with forked children only (the loader checks `shareable`)
            self._fd = None
            self._mm = mmap.mmap(-1, self.size)
        self._setup()
        self.states[:] = FREE

    # -------------------------------------------------------------------- process plumbing
    def _setup(self) -> None:
        self.states = np.frombuffer(self._mm, dtype=np.uint8, count=self.n_slots)
        self._slot_type = ctypes.c_ubyte * self.slot_bytes
        self._held: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._pinned: Any = None

    def shareable(self, start_method: str) -> bool:
        """Whether worker processes started with `start_method` can map this ring."""
        return start_method == "fork" or self._fd is not None

    def __getstate__(self) -> dict:
        # Spawned/forkserver workers get the memfd as a file descriptor (never a name in /dev/shm).
        if self._fd is None:
            raise TypeError("this BatchRing can only be shared with forked processes")
        return {"groups": self.groups, "slots_per_group": self.slots_per_group, "slot_bytes": self.slot_bytes,
                "header": self.header, "size": self.size, "n_slots": self.n_slots, "fd": reduction.DupFd(self._fd)}

    def __setstate__(self, state: dict) -> None:
        fd = state.pop("fd").detach()
        self.__dict__.update(state)
        self._fd = fd
        self._mm = mmap.mmap(fd, self.size)
        self._setup()

    def close(self) -> None:
        """Unmap now if no batch still views the ring (otherwise the kernel frees it with the last view)."""
        self.unpin()
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        self.states = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass  # batches still alive: their views keep the mapping until they go

    # -------------------------------------------------------------------- worker side
    def acquire(self, group: int) -> int | None:
        """A free slot of `group` (marked busy), or None when all are in use."""
        first = group * self.slots_per_group
        for slot in range(first, first + self.slots_per_group):
            if self.states[slot] == FREE:
                self.states[slot] = BUSY
                return slot
        return None

    def give_back(self, slot: int) -> None:
        """Worker side: a slot it acquired but did not hand over."""
        self.states[slot] = FREE

    def slot(self, slot: int) -> np.ndarray:
        """The slot's bytes as a writable uint8 array (in this process)."""
        return np.frombuffer(self._mm, dtype=np.uint8, count=self.slot_bytes, offset=self.header + slot * self.slot_bytes)

    # -------------------------------------------------------------------- training-process side
    def lend(self, slot: int) -> tuple[np.ndarray, Lease]:
        """The slot's bytes for one batch; the slot is freed when every view of them is gone."""
        holder = self._slot_type.from_buffer(self._mm, self.header + slot * self.slot_bytes)
        lease = Lease()
        with self._lock:
            self._held[slot] = lease
        # numpy views of `holder` keep it alive (their base chain ends at it), so this runs only
        # once the last tensor or array viewing the batch is gone.
        weakref.finalize(holder, self._release, slot, lease)
        return np.frombuffer(holder, dtype=np.uint8), lease

    def _release(self, slot: int, lease: Lease) -> None:
        lease.wait()
        with self._lock:
            if self._held.get(slot) is lease:
                del self._held[slot]
                if self.states is not None:
                    self.states[slot] = FREE

    def reclaim(self) -> None:
        """Free every slot no batch of this process holds (call when no worker is running:
        slots filled by stopped workers, never handed over, come back)."""
        with self._lock:
            for slot in range(self.n_slots):
                if slot not in self._held:
                    self.states[slot] = FREE

    @property
    def held(self) -> int:
        return len(self._held)

    def pin(self) -> bool:
        """Page-lock the ring for asynchronous copies to the GPU (CUDA only; False if not done)."""
        import torch

        if self._pinned is not None or not torch.cuda.is_available():
            return self._pinned is not None
        anchor = ctypes.c_char.from_buffer(self._mm)
        rc = torch.cuda.cudart().cudaHostRegister(ctypes.addressof(anchor), self.size, 0)
        if int(rc) != 0:
            return False
        self._pinned = anchor
        return True

    def unpin(self) -> None:
        if getattr(self, "_pinned", None) is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(ctypes.addressof(self._pinned))
            self._pinned = None
