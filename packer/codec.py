"""Array <-> member bytes: `.npy` (never pickled) compressed with zstd, optionally byte-shuffled.

Filter `none`: the member is a zstd frame of an .npy file, decodable with `zstandard` +
`np.load(allow_pickle=False)`. Filter `shuffle` (the default, chosen by `tools/bench_pack.py`:
float32/uint16 members shrink by 15-50 %): for dtypes wider than one byte the payload is
SHUFFLE_MAGIC + the .npy header + `itemsize` byte planes (plane k = byte k of every element, in the
array's own byte order), which zstd compresses much better because slowly varying high bytes line
up. One-byte dtypes are never shuffled (their members stay plain .npy). `decode_array` reads both;
the manifest's `codec.filter` says which one a dataset uses.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import zstandard

DEFAULT_LEVEL = 3
FILTERS = ("none", "shuffle")
DEFAULT_FILTER = "shuffle"
"""Chosen by tools/bench_pack.py: much smaller float32/uint16 members and faster encoding (docs/packing.md)."""
SHUFFLE_MAGIC = b"FSHUF1\n"
"""Prefix of a byte-shuffled payload: magic, then a normal .npy header, then the shuffled data."""

_NPY_MAGIC = b"\x93NUMPY"
_local = threading.local()


def _npy_header(arr: np.ndarray) -> bytes:
    """The .npy header `np.save` writes for `arr` (format 1.0: ample for any array of a few dims)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    return buf.getvalue()


def _npy_header_len(npy: bytes) -> int:
    """Length of the .npy header (magic + version + header dict), i.e. where the data starts."""
    major = npy[6]
    if major == 1:
        return 10 + int.from_bytes(npy[8:10], "little")
    return 12 + int.from_bytes(npy[8:12], "little")


def encode_array(arr: np.ndarray, level: int = DEFAULT_LEVEL, filter: str = DEFAULT_FILTER) -> bytes:
    """Serialise `arr` losslessly (dtype, shape, byte order kept) and compress it with zstd."""
    if arr.dtype.hasobject:
        raise TypeError("object arrays cannot be stored (they would need pickle)")
    if filter not in FILTERS:
        raise ValueError(f"unknown codec filter {filter!r}; expected one of {FILTERS}")
    arr = np.ascontiguousarray(arr)
    data = arr.reshape(-1).view(np.uint8)  # the raw element bytes, in the array's byte order
    if filter == "shuffle" and arr.dtype.itemsize > 1:
        body = data.reshape(-1, arr.dtype.itemsize)
        planes = np.empty((arr.dtype.itemsize, body.shape[0]), dtype=np.uint8)
        for k in range(arr.dtype.itemsize):
            planes[k] = body[:, k]
        pieces = [SHUFFLE_MAGIC, _npy_header(arr), planes.reshape(-1)]
    else:
        pieces = [_npy_header(arr), data]
    # Streamed in pieces (no concatenated copy); the pledged size puts the content size in the frame.
    cobj = _compressor(level).compressobj(size=sum(len(p) for p in pieces))
    return b"".join([*(cobj.compress(p) for p in pieces), cobj.flush()])


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per (thread, level), reused: contexts are costly to set up, not shareable.

    Single-threaded with the content size in the frame: the same input always gives the same bytes.
    The frame checksum (4 bytes) lets any reader detect a damaged member by itself.
    """
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
    return cache[level]


def _unshuffle(npy: memoryview) -> np.ndarray:
    """Rebuild the array from a shuffled payload with one strided copy (no intermediate bytes)."""
    start = _npy_header_len(npy)
    header = io.BytesIO(npy[:start])
    version = np.lib.format.read_magic(header)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(header)
    planes = np.frombuffer(npy, dtype=np.uint8, offset=start).reshape(dtype.itemsize, -1)
    out = np.empty((planes.shape[1], dtype.itemsize), dtype=np.uint8)
    for k in range(dtype.itemsize):  # one plane at a time: several times faster than out[...] = planes.T
        out[:, k] = planes[k]
    return out.view(dtype).reshape(shape, order="F" if fortran else "C")


def decode_array(data: bytes) -> np.ndarray:
    """Inverse of `encode_array`; never unpickles."""
    dctx = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    raw = dctx.decompress(data)
    if raw.startswith(SHUFFLE_MAGIC):
        return _unshuffle(memoryview(raw)[len(SHUFFLE_MAGIC):])
    if not raw.startswith(_NPY_MAGIC):
        raise ValueError("member is not a zstd-compressed .npy array")
    return np.load(io.BytesIO(raw), allow_pickle=False)
