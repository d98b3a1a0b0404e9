"""Opening a patch's GeoTIFFs wherever they lie: a file of an extracted tree, or a zip member.

A zip member is read by `packer.zips.read_member` (one ranged read, inflated, CRC-checked) and
handed to rasterio as bytes (`MemoryFile`). The benchmark measured this against GDAL's own
`/vsizip/` path on the same zips and kept it: it is faster for stored and for deflated members
(`python -m tools.bench_pack`, "reading GeoTIFFs from zips"), and the same code reads local and
remote zips. Nothing is written to disk.

The first member asked for a patch starts fetching all of that patch's zip members at once, on a
few threads: over HTTP the requests overlap instead of paying one round trip after another, and
locally the inflating (zlib releases the GIL) overlaps rasterio's decoding of the previous member.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import rasterio
from rasterio.io import MemoryFile

from packer.errors import PatchError
from packer.patch import PatchSource
from packer.ranges import reader_for
from packer.zips import MemberError, read_member

FETCH_THREADS = 12
"""Members of one patch fetched at once: all of them (a patch has at most ten files)."""


class _Prefetch:
    """The zip members of the patch being read, fetched concurrently (one patch at a time per process)."""

    def __init__(self) -> None:
        self.patch_id: str | None = None
        self.futures: dict[str, Future] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()

    def data(self, patch: PatchSource, name: str) -> bytes:
        with self.lock:
            if self.patch_id != patch.patch_id:
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="flair-pack-fetch")
                for f in self.futures.values():
                    f.cancel()
                self.patch_id = patch.patch_id
                self.futures = {m: self.pool.submit(_fetch, *found) for m in patch.modalities
                                if (found := patch.member(m)) is not None}
            future = self.futures.pop(name, None)
            if future is None:  # asked again for the same patch: fetch once more
                future = self.pool.submit(_fetch, *patch.member(name))
        try:
            return future.result()
        except MemberError as exc:
            raise PatchError(patch.patch_id, patch.where(name), str(exc)) from None


def _fetch(archive, member) -> bytes:
    return read_member(reader_for(archive.location), member)


_PREFETCH = _Prefetch()


@contextmanager
def open_raster(patch: PatchSource, name: str) -> Iterator[rasterio.io.DatasetReader]:
    """The GeoTIFF of modality `name` of `patch`, open for reading (from a folder or a zip)."""
    if patch.member(name) is None:
        with rasterio.open(Path(patch.root) / patch.files[name]) as src:
            yield src
        return
    with MemoryFile(_PREFETCH.data(patch, name)) as mem, mem.open() as src:
        yield src
