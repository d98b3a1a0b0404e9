"""Read one sample's members out of its shard with ranged reads, and decode them.

Only the members the config needs are fetched (an aerial-only run never downloads the Sentinel
series); members that sit next to each other in the tar are fetched with one read. Before the
first read of a shard in a process its size is checked against the manifest, and, when
verification is on, its sha256 (one extra full read of that shard per process).
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Sequence

import numpy as np

import zstandard

from packer.codec import SHUFFLE_MAGIC
from trainer.data.catalog import Selection
from trainer.data.sources import LocalSource, Source, check_shard


_NPY_MAGIC = b"\x93NUMPY"
_local = threading.local()
_HEADER_LOCK = threading.Lock()
"""numpy parses .npy headers with `ast.literal_eval`; CPython 3.11's AST constructor is not safe
from several threads at once (it failed here with "SystemError: AST constructor recursion depth
mismatch" under the decode threads), so header parsing, ~20 us a member, takes turns."""


def decode_member(data: bytes | memoryview) -> np.ndarray:
    """A `.npy.zst` member -> array, with one copy at most (`packer.codec.decode_array`'s format).

    Unlike `np.load(BytesIO(...))`, a plain member is wrapped without copying (the array is
    read-only; every preprocessing path copies before writing). A byte-shuffled member is
    un-shuffled plane by plane, which is several times faster than a transposed copy.
    Object dtypes are refused: nothing here ever unpickles.
    """
    return array_from_npy(decompress_member(data))


def decompress_member(data: bytes | memoryview) -> bytes:
    """zstd frame -> the stored payload (one decompressor per thread: they are not thread-safe)."""
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx.decompress(data)


def array_from_npy(raw: bytes) -> np.ndarray:
    """A decompressed `.npy` payload (optionally byte-shuffled, see packer.codec) -> array."""
    start = len(SHUFFLE_MAGIC) if raw.startswith(SHUFFLE_MAGIC) else 0
    if raw[start : start + 6] != _NPY_MAGIC:
        raise ValueError("member is not a zstd-compressed .npy array")
    header = io.BytesIO(raw[start : start + 65536])
    version = np.lib.format.read_magic(header)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    with _HEADER_LOCK:
        shape, fortran, dtype = read_header(header)
    if dtype.hasobject:
        raise ValueError("member holds an object array (would need pickle); refused")
    offset = start + header.tell()
    count = int(np.prod(shape)) if shape else 1
    if start and dtype.itemsize > 1:
        body = np.frombuffer(raw, dtype=np.uint8, count=count * dtype.itemsize, offset=offset)
        planes = np.empty((count, dtype.itemsize), dtype=np.uint8)
        for k in range(dtype.itemsize):
            planes[:, k] = body[k * count : (k + 1) * count]
        flat = planes.reshape(-1).view(dtype)
    else:
        flat = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


def coalesce(ranges: Sequence[tuple[int, int]], max_gap: int) -> list[tuple[int, int, list[int]]]:
    """Group `(offset, size)` ranges whose gaps are <= `max_gap` into `(start, length, members)` reads."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    groups: list[tuple[int, int, list[int]]] = []
    for i in order:
        off, size = ranges[i]
        if groups and off - (groups[-1][0] + groups[-1][1]) <= max_gap:
            start, length, members = groups[-1]
            groups[-1] = (start, max(length, off + size - start), members + [i])
        else:
            groups.append((off, size, [i]))
    return groups


class SampleReader:
    """Raw samples `{"patch_id", "meta", "arrays"}` of a selection, by row number."""

    def __init__(self, source: Source, selection: Selection, needed: Sequence[str], verify: bool = False,
                 max_gap: int | None = None) -> None:
        self.source = source
        self.selection = selection
        self.needed = tuple(needed)
        self.verify = verify
        # Local reads are cheap syscalls: only merge true neighbours. Remote reads pay a round
        # trip each: merging through a skipped member is cheaper up to a few MB.
        self.max_gap = max_gap if max_gap is not None else (4096 if isinstance(source, LocalSource) else 4 << 20)
        self._checked: set[int] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_checked"] = set()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _check(self, shard: int) -> None:
        if shard in self._checked:
            return
        with self._lock:
            if shard in self._checked:
                return
            info = self.selection.shards[shard]
            check_shard(self.source, info.path, info.bytes, info.sha256, full=self.verify)
            self._checked.add(shard)

    def read_members(self, row: int) -> dict[str, bytes]:
        """The bytes of the needed members (and the JSON metadata) of selected row `row`."""
        sel = self.selection
        shard = int(sel.shard[row])
        self._check(shard)
        names = ("json", *self.needed)
        ranges = [(int(sel.members[n][0][row]), int(sel.members[n][1][row])) for n in names]
        path = sel.shards[shard].path
        out: dict[str, bytes] = {}
        for start, length, members in coalesce(ranges, self.max_gap):
            data = self.source.read_range(path, start, length)
            view = memoryview(data)
            for i in members:
                off, size = ranges[i]
                out[names[i]] = view[off - start : off - start + size]
        return out

    def read(self, row: int) -> dict[str, Any]:
        """Read and decode one sample."""
        members = self.read_members(row)
        meta = json.loads(bytes(members.pop("json")))
        pid = self.selection.patch_ids[row]
        if meta.get("patch_id", pid) != pid:
            raise ValueError(f"{self.source.url(self.selection.shards[int(self.selection.shard[row])].path)}: "
                             f"row of {pid} points at the metadata of {meta.get('patch_id')} (index and shard disagree)")
        arrays: dict[str, np.ndarray] = {name: decode_member(data) for name, data in members.items()}
        return {"patch_id": pid, "meta": meta, "arrays": arrays}
