"""Member decoding and read coalescing."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from packer.shardformat.encoding import decode_array
from trainer.data.reader import coalesce


def decode_member(data, filter="none"):
    """The one member decoder; byte-shuffled members exist only in format-1 packs."""
    return decode_array(data, format_version=1 if filter == "shuffle" else 2)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int16"])
@pytest.mark.parametrize("filter", ["none", "shuffle"])
def test_decode_member_round_trip(dtype, filter, legacy_encode):
    rng = np.random.default_rng(0)
    for shape in [(3, 5, 7), (10,), (1, 1)]:
        a = (rng.random(shape) * 1000).astype(dtype)
        b = decode_member(legacy_encode(a, filter=filter), filter)
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_decode_member_refuses_pickles_and_garbage():
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object array"):
        decode_member(zstandard.ZstdCompressor().compress(buf.getvalue()))
    with pytest.raises(ValueError, match="not a zstd-compressed .npy"):
        decode_member(zstandard.ZstdCompressor().compress(b"hello world"))


def test_coalesce_merges_neighbours_only():
    ranges = [(1000, 10), (0, 100), (612, 300), (50_000, 5)]
    groups = coalesce(ranges, max_gap=512)
    assert groups == [(0, 1010, [1, 2, 0]), (50_000, 5, [3])]
    assert coalesce(ranges, max_gap=0) == [(0, 100, [1]), (612, 300, [2]), (1000, 10, [0]), (50_000, 5, [3])]
