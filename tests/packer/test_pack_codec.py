"""The member codec: lossless for every dtype, exactly `np.save` in a zstd frame, strict on bad input."""

import io

import numpy as np
import pytest
import zstandard

from packer import schema
from packer.shardformat.encoding import (DEFAULT_SETTINGS, LEGACY_SHUFFLE_MAGIC, Arena, MemberError, compression_settings,
                          decode_array, decode_array_into, encode_array, member_checksum, wds_decoder)

SETTINGS = [3, *DEFAULT_SETTINGS.values()]


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64", ">u2"])
@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_roundtrip_is_bit_exact(dtype, setting):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 7, 5)) * 1000).astype(dtype)
    if arr.dtype.kind == "f":
        arr.flat[:3] = [np.nan, np.inf, -0.0]
    data = encode_array(arr, setting)
    for out in (decode_array(data), decode_array_into(data, Arena(64))):
        assert out.dtype == arr.dtype and out.shape == arr.shape
        assert out.tobytes() == arr.tobytes()


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_member_is_exactly_np_save_in_a_zstd_frame(setting):
    """What any client sees: zstd + np.load(allow_pickle=False), for every per-modality setting."""
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data = encode_array(arr, setting)
    params = zstandard.get_frame_parameters(data)
    assert params.content_size == len(npy(arr)) and params.has_checksum
    assert zstandard.ZstdDecompressor().decompress(data) == npy(arr)
    assert np.array_equal(np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(data)), allow_pickle=False), arr)


def test_encoding_is_deterministic_and_settings_cover_every_modality():
    arr = np.linspace(0, 1, 400, dtype=np.float32).reshape(4, 10, 10)
    assert encode_array(arr, DEFAULT_SETTINGS["DEM_ELEV"]) == encode_array(arr, DEFAULT_SETTINGS["DEM_ELEV"])
    assert set(compression_settings()) == set(schema.MODALITY_NAMES)
    assert compression_settings(5) == {m: {"level": 5} for m in schema.MODALITY_NAMES}
    some = compression_settings({"DEM_ELEV": 9})  # `--level DEM_ELEV=9`: that modality only
    assert some["DEM_ELEV"] == {"level": 9} and some["AERIAL_RGBI"] == DEFAULT_SETTINGS["AERIAL_RGBI"]


def test_edge_shapes_and_layouts():
    for arr in (np.zeros((0, 4, 4), np.float32), np.arange(60, dtype=np.uint16).reshape(3, 4, 5)[:, ::2],
                np.arange(24, dtype=">f4").reshape(2, 3, 4), np.asfortranarray(np.arange(12.0).reshape(3, 4)),
                np.array(7, dtype=np.int32)):
        for out in (decode_array(encode_array(arr)), decode_array_into(encode_array(arr), Arena(16))):
            assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)


def test_arena_is_reused_and_grows():
    arena = Arena(1024)
    a = decode_array_into(encode_array(np.ones(100, np.uint8)), arena)
    b = decode_array_into(encode_array(np.full(5000, 2, np.uint16)), arena)  # grows past 1 KB
    assert a.sum() == 100 and b.sum() == 10000
    arena.reset()
    c = decode_array_into(encode_array(np.full(100, 3, np.uint8)), arena)
    assert c.sum() == 300


def legacy_payload(arr: np.ndarray) -> bytes:
    """A format-1 `--filter shuffle` member, written the way packer/codec.py did before format 2."""
    arr = np.ascontiguousarray(arr)
    header = npy(arr)[: len(npy(arr)) - arr.nbytes]
    planes = arr.reshape(-1).view(np.uint8).reshape(-1, arr.dtype.itemsize).T.copy()
    return zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(
        LEGACY_SHUFFLE_MAGIC + header + planes.tobytes())


def test_format_1_shuffled_members_are_read_only_when_the_pack_says_format_1():
    arr = np.arange(300, dtype=np.float32).reshape(3, 10, 10) * 1.5
    old = legacy_payload(arr)
    assert np.array_equal(decode_array(old, format_version=1), arr)
    assert np.array_equal(decode_array_into(old, Arena(), format_version=1), arr)
    for decode in (lambda d: decode_array(d), lambda d: decode_array_into(d, Arena())):
        with pytest.raises(MemberError, match="FSHUF1.*only format-1 packs"):
            decode(old)  # in a format-2 pack, content and suffix disagree: an error, not a guess


@pytest.mark.parametrize("bad, match", [
    (b"not zstd at all", "not a zstd frame"),
    (zstandard.ZstdCompressor().compress(b"hello world, not an array"), "not a zstd-compressed .npy array"),
    (zstandard.ZstdCompressor().compress(npy(np.arange(10))[:-8]), "data has 72 bytes, its header .* says 80"),
    (zstandard.ZstdCompressor().compress(npy(np.arange(10)) + b"\0" * 8), "data has 88 bytes"),
    (zstandard.ZstdCompressor(write_content_size=True).compress(npy(np.arange(10)))[:-3], "does not decompress|declares"),
])
def test_bad_members_are_errors_never_silent(bad, match):
    for decode in (lambda d: decode_array(d), lambda d: decode_array_into(d, Arena())):
        with pytest.raises(MemberError, match=match):
            decode(bad)


def test_nothing_is_ever_unpickled():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    framed = zstandard.ZstdCompressor().compress(buf.getvalue())
    for decode in (lambda d: decode_array(d), lambda d: decode_array_into(d, Arena())):
        with pytest.raises(MemberError, match="object array"):
            decode(framed)
    with pytest.raises(TypeError):
        encode_array(np.array([{"a": 1}], dtype=object))


def test_unknown_format_version_is_refused():
    with pytest.raises(MemberError, match="shard format 9"):
        decode_array(encode_array(np.zeros(3)), format_version=9)


def test_checksum_and_webdataset_handler():
    data = encode_array(np.arange(6, dtype=np.uint16))
    assert member_checksum(data) == member_checksum(bytes(data)) and member_checksum(data) != member_checksum(data[:-1])
    assert np.array_equal(wds_decoder("aerial_rgbi.npy.zst", data), np.arange(6))
    assert wds_decoder("json", b'{"a": 1}') == {"a": 1}
    assert wds_decoder("cls", b"3") is None
