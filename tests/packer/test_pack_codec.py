"""The member codec: lossless for every dtype, no pickle, plain members readable without our code."""

import io

import numpy as np
import pytest
import zstandard

from packer.codec import FILTERS, SHUFFLE_MAGIC, decode_array, encode_array


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64", ">u2"])
@pytest.mark.parametrize("filter", FILTERS)
def test_roundtrip_is_bit_exact(dtype, filter):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 7, 5)) * 1000).astype(dtype)
    if arr.dtype.kind == "f":
        arr.flat[:3] = [np.nan, np.inf, -0.0]
    out = decode_array(encode_array(arr, level=5, filter=filter))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()


def test_plain_member_is_zstd_npy():
    arr = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    raw = zstandard.ZstdDecompressor().decompress(encode_array(arr, filter="none"))
    assert np.array_equal(np.load(io.BytesIO(raw), allow_pickle=False), arr)
    # One-byte arrays are never shuffled: plain .npy whatever the filter.
    labels = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw = zstandard.ZstdDecompressor().decompress(encode_array(labels, filter="shuffle"))
    assert np.array_equal(np.load(io.BytesIO(raw), allow_pickle=False), labels)


def test_shuffled_member_is_marked_and_deterministic():
    arr = np.linspace(0, 1, 400, dtype=np.float32).reshape(4, 10, 10)
    a, b = encode_array(arr, filter="shuffle"), encode_array(arr, filter="shuffle")
    assert a == b
    raw = zstandard.ZstdDecompressor().decompress(a)
    assert raw.startswith(SHUFFLE_MAGIC)
    # Documented layout: magic, .npy header, then byte planes (plane k = byte k of each element).
    body = raw[-arr.nbytes:]
    planes = np.frombuffer(body, np.uint8).reshape(4, -1)
    assert np.array_equal(planes.T.copy().view("<f4").reshape(arr.shape), arr)


def test_refuses_objects_and_garbage():
    with pytest.raises(TypeError):
        encode_array(np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        decode_array(zstandard.ZstdCompressor().compress(b"not an array"))
    with pytest.raises(ValueError):
        encode_array(np.zeros(3), filter="delta")


@pytest.mark.parametrize("filter", FILTERS)
def test_edge_shapes_and_layouts(filter):
    for arr in (np.zeros((0, 4, 4), np.float32), np.arange(60, dtype=np.uint16).reshape(3, 4, 5)[:, ::2],
                np.arange(24, dtype=">f4").reshape(2, 3, 4)):
        out = decode_array(encode_array(arr, filter=filter))
        assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)


def test_plain_payload_is_exactly_np_save():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    assert zstandard.ZstdDecompressor().decompress(encode_array(arr, filter="none")) == buf.getvalue()
