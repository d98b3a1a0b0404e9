"""Shard members' bytes: the one definition of their encoding, encoder and decoder side by side.

A member named `<patch_id>.<MODALITY>.npy.zst` is exactly one zstd frame (content size and
checksum in the frame header) of the `.npy` file that `np.save(f, arr, allow_pickle=False)`
writes, nothing else: plain webdataset, Hugging Face `datasets` and any zstd + numpy client
decode it (`np.load(io.BytesIO(zstd.decompress(b)), allow_pickle=False)`). `<patch_id>.json`
is compact UTF-8 JSON with sorted keys (`encode_json`). That is shard format 2
(`packer.shardformat.names.FORMAT_VERSION`, the manifest's `format_version`).

Format 1 (packs written before format 2) could also hold, for dtypes wider than one byte, a
byte-shuffled payload under the same suffix (`FSHUF1\\n` + the `.npy` header + the array bytes
regrouped into `itemsize` planes). This module still reads those, and only when told that the
pack is format 1: in a format-2 pack such a payload is a member whose content disagrees with its
suffix, which is an error like any other, never a guess. The shuffle is no longer written:
measured by `tools/bench_formats.py`, it saved bytes on float32 elevation but did not pay on
read (docs/packing.md, "Member encoding").

Compression settings are chosen per modality (`DEFAULT_SETTINGS`, measured by
`tools/bench_formats.py`): every setting writes a standard zstd frame, so readers never need to
know which one was used. Encoding is single-threaded and deterministic.

Opt-in (`flair-pack --shuffle`, shard format 3): modalities of dtypes wider than one byte (float32
elevation, uint16 SPOT and Sentinel-2, float32 Sentinel-1) are stored as `<patch_id>.<MODALITY>.npy.blosc`:
exactly one Blosc chunk (the c-blosc 1 format, byte-shuffle with the dtype's item size, then LZ4HC
or zstd inside; `SHUFFLE_SETTINGS`) of the same `.npy` file. Byte-shuffle groups the bytes of
equal rank, so float32 elevation shrinks by a fifth more than with plain zstd and decodes several
times faster (compiled un-shuffle; docs/packing.md, "Member encoding"). numcodecs (zarr's codec
library) writes and reads it; python-blosc2 reads it too (`blosc2.decompress`). Plain webdataset
and Hugging Face `datasets` know neither, which is why it is never the default; `wds_decoder` is
the webdataset handler for both suffixes. The suffix says which decoder a member needs, and the
decoder checks that the bytes are what the suffix says.

Integrity: each member's stored bytes have an xxh3_64 checksum (`member_checksum`) recorded in
the index; readers check it on every ranged read (a few bytes of index per member, ~15 us per
MB), which covers the JSON member too.

Decoding is strict: a frame that is not zstd, a payload that is not `.npy`, an object dtype
(which would need pickle), or a data length that disagrees with the header raises
`MemberError`; nothing is ever unpickled. `decode_array` returns an array over freshly
decompressed bytes (one copy); `decode_array_into` decompresses into caller-owned memory (an
`Arena`), which the loader reuses from sample to sample so that no page is faulted in twice.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Iterable, Mapping

import numpy as np
import xxhash
import zstandard

from packer import schema
from packer.shardformat import names
from packer.shardformat.names import ARRAY_SUFFIX, SHUFFLED_ARRAY_SUFFIX

MEMBER_CHECKSUM = "xxh3_64"
"""Algorithm of the per-member checksums in the index (`<member>_xxh3` columns)."""

DEFAULT_SETTINGS: dict[str, dict[str, int]] = {
    # High-entropy uint8 imagery: level 1 gives the same size as level 3 here and decodes fastest.
    "AERIAL_RGBI": {"level": 1},
    # The small historical panchromatic compresses better with more effort, at no decoding cost.
    "AERIAL-RLT_PAN": {"level": 9},
    # float32 elevation: the largest member. Optimal parsing with 3-byte matches (what levels >= 18
    # do) is what makes float32 shrink, at a much lower encoding cost with a short search.
    "DEM_ELEV": {"level": 19, "window_log": 20, "chain_log": 12, "hash_log": 12, "search_log": 1},
    # Small members (tens of kB): a strong level costs little to encode and nothing to decode.
    "SPOT_RGBI": {"level": 9},
    "SENTINEL2_TS": {"level": 9},
    "SENTINEL2_MSK-SC": {"level": 9},
    "SENTINEL1-ASC_TS": {"level": 9},
    "SENTINEL1-DESC_TS": {"level": 9},
    "AERIAL_LABEL-COSIA": {"level": 9},
    "ALL_LABEL-LPIS": {"level": 9},
}
"""Per-modality zstd parameters (`zstandard.ZstdCompressionParameters.from_level` keywords);
the measurements behind them are in docs/packing.md. `--level N` replaces them all by level N."""
FALLBACK_SETTING = {"level": 3}

SHUFFLE_SETTINGS: dict[str, dict[str, Any]] = {
    # float32 elevation, 2 MB: after the shuffle LZ4HC is as small as zstd and decodes twice as fast.
    "DEM_ELEV": {"codec": "blosc", "cname": "lz4hc", "clevel": 9},
    # Small members: zstd inside is smaller than LZ4HC, at no measurable decoding cost.
    "SPOT_RGBI": {"codec": "blosc", "cname": "zstd", "clevel": 5},
    "SENTINEL2_TS": {"codec": "blosc", "cname": "zstd", "clevel": 5},
    "SENTINEL1-ASC_TS": {"codec": "blosc", "cname": "zstd", "clevel": 5},
    "SENTINEL1-DESC_TS": {"codec": "blosc", "cname": "zstd", "clevel": 5},
}
"""`--shuffle`: the Blosc settings of the modalities whose dtype is wider than one byte (the shuffle
does nothing for uint8; those stay zstd). Chosen by `tools/bench_formats.py --codec-only`."""
BLOSC_VERSIONS = (1, 2)
"""c-blosc 1's chunk format versions (first header byte) that a `.npy.blosc` member may carry."""

LEGACY_SHUFFLE_MAGIC = b"FSHUF1\n"
"""Prefix of a format-1 byte-shuffled payload (read only)."""
NPY_MAGIC = b"\x93NUMPY"
MAX_MEMBER_BYTES = 1 << 31
"""Refuse to decompress a frame that claims more than this (a damaged header must not exhaust memory)."""
_ALIGN = 64

_local = threading.local()


class MemberError(ValueError):
    """A member's bytes do not hold what its name says (the caller adds shard, patch and member)."""


# ------------------------------------------------------------------------------------------------
# Writer
# ------------------------------------------------------------------------------------------------
def member_checksum(data: bytes | memoryview) -> int:
    """xxh3_64 of a member's stored bytes, as recorded in the index."""
    return xxhash.xxh3_64_intdigest(data)


def compression_settings(level: int | Mapping[str, int] | None = None,
                         shuffle: bool = False) -> dict[str, dict[str, Any]]:
    """The settings a pack uses: the per-modality defaults, one zstd level for every modality, or
    the defaults with some modalities set to a level (`{"DEM_ELEV": 9}`); with `shuffle`, the
    modalities of `SHUFFLE_SETTINGS` are Blosc members (a level given for one of them is refused)."""
    if level is None or isinstance(level, Mapping):
        out = {name: dict(s) for name, s in DEFAULT_SETTINGS.items()}
        out.update({name: {"level": int(v)} for name, v in (level or {}).items()})
    else:
        out = {name: {"level": int(level)} for name in schema.MODALITY_NAMES}
    if shuffle:
        clash = sorted(set(level) & set(SHUFFLE_SETTINGS)) if isinstance(level, Mapping) else []
        if clash:
            raise ValueError(f"{', '.join(clash)}: stored with Blosc under --shuffle, so a zstd level does not apply")
        out.update({name: dict(s) for name, s in SHUFFLE_SETTINGS.items()})
    return out


def member_suffix(setting: Mapping[str, Any] | int | None) -> str:
    """The array member suffix a setting writes (`.npy.blosc` for Blosc, `.npy.zst` otherwise)."""
    return SHUFFLED_ARRAY_SUFFIX if isinstance(setting, Mapping) and setting.get("codec") == "blosc" else ARRAY_SUFFIX


def pack_format_version(settings: Mapping[str, Mapping[str, Any]]) -> int:
    """The shard format of a pack written with `settings` (its manifest's and every sample JSON's)."""
    return names.format_version_of(member_suffix(s) for s in settings.values())


def member_suffixes(codec: Mapping[str, Any] | None) -> dict[str, str]:
    """Modality -> its array member suffix in a pack with this manifest `codec` entry (`.npy.zst`
    unless said otherwise: packs before format 3 have no Blosc members)."""
    settings = (codec or {}).get("settings") or {}
    return {name: member_suffix(settings.get(name)) for name in schema.MODALITY_NAMES}


def encode_array(arr: np.ndarray, setting: Mapping[str, Any] | int | None = None) -> bytes:
    """`arr` -> exactly the `.npy` file `np.save` writes (dtype, shape, byte order kept), as one
    zstd frame, or as one Blosc chunk for a Blosc setting (`member_suffix` says which).

    `setting` is a zstd level, a `DEFAULT_SETTINGS` or `SHUFFLE_SETTINGS` entry (default: zstd level 3).
    """
    if arr.dtype.hasobject:
        raise TypeError("object arrays cannot be stored (they would need pickle)")
    if isinstance(setting, int):
        setting = {"level": setting}
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)  # numpy's own writer: the payload is np.save's, byte for byte
    payload = buf.getbuffer()
    if member_suffix(setting) == SHUFFLED_ARRAY_SUFFIX:
        return _blosc_encode(payload, arr.dtype.itemsize, setting)
    return _compressor(setting or FALLBACK_SETTING).compress(payload)


_BLOSC_ENCODE_LOCK = threading.Lock()


def _blosc():
    """numcodecs' Blosc module, imported on first use (only `--shuffle` packs need it)."""
    import numcodecs.blosc

    return numcodecs.blosc


def _blosc_encode(payload: memoryview, itemsize: int, setting: Mapping[str, Any]) -> bytes:
    """The `.npy` file as one Blosc chunk, byte-shuffled by the array's item size.

    np.save pads its header to a multiple of 64 bytes, so the array bytes start on an item
    boundary and the shuffle groups each element's bytes of equal rank. Deterministic: one
    thread, fixed blocks, the same bytes whatever the process or worker count.
    """
    typesize = itemsize if len(payload) % itemsize == 0 else 1
    blosc = _blosc()
    typed = np.frombuffer(payload, dtype=np.dtype(f"u{typesize}") if typesize in (1, 2, 4, 8) else np.uint8)
    # One thread, always: with several, c-blosc 1 writes the blocks in the order they finish, so
    # the chunk's bytes (not its content) would change from run to run. numcodecs uses its threads
    # on the main thread unless told not to, and that switch is a module global: set it for this
    # call only, under a lock.
    with _BLOSC_ENCODE_LOCK:
        before, blosc.use_threads = blosc.use_threads, False
        try:
            return bytes(blosc.compress(typed, setting["cname"].encode(), int(setting["clevel"]), blosc.SHUFFLE, 0))
        finally:
            blosc.use_threads = before


def encode_json(obj: object) -> bytes:
    """A `<patch_id>.json` member: compact JSON with sorted keys, so the same object gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _compressor(setting: Mapping[str, int]) -> zstandard.ZstdCompressor:
    """One compressor per (thread, setting), reused: contexts are costly to set up, not shareable.

    Single-threaded with the content size in the frame: the same input always gives the same bytes.
    The frame checksum (4 bytes) lets any zstd reader detect a damaged member by itself.
    """
    key = tuple(sorted(setting.items()))
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if key not in cache:
        params = dict(setting)
        level = params.pop("level")
        cp = zstandard.ZstdCompressionParameters.from_level(level, write_content_size=True, write_checksum=True,
                                                            threads=0, **params)
        cache[key] = zstandard.ZstdCompressor(compression_params=cp)
    return cache[key]


# ------------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------------
_HEADER_LOCK = threading.Lock()
"""numpy parses .npy headers with `ast.literal_eval`, which CPython 3.11 does not run safely from
several threads at once ("SystemError: AST constructor recursion depth mismatch" seen under the
decode threads): parsing takes turns, and a cache means it happens once per distinct header."""
_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}
_MAX_CACHED_HEADERS = 4096


def _parse_header(raw: memoryview | bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, data offset) of a `.npy` payload; object dtypes refused."""
    if bytes(raw[:6]) != NPY_MAGIC or len(raw) < 10:
        start = bytes(raw[:8])
        raise MemberError(f"is not a zstd-compressed .npy array (the payload starts with {start!r})")
    major = raw[6]
    if major == 1:
        end = 10 + int.from_bytes(raw[8:10], "little")
    elif major == 2:
        end = 12 + int.from_bytes(raw[8:12], "little")
    else:
        raise MemberError(f".npy format version {major} is not read here (np.save writes 1.0, or 2.0 for huge headers)")
    if end > len(raw):
        raise MemberError(f".npy header runs past the end of the payload ({end} > {len(raw)} bytes)")
    key = bytes(raw[:end])
    hit = _HEADERS.get(key)
    if hit is not None:
        return hit
    with _HEADER_LOCK:
        f = io.BytesIO(key)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        try:
            np.lib.format.read_magic(f)
            shape, fortran, dtype = read(f, max_header_size=1 << 20)
        except (ValueError, SyntaxError) as exc:
            raise MemberError(f"unreadable .npy header ({exc})") from None
    if dtype.hasobject:
        raise MemberError("member holds an object array (would need pickle); refused")
    parsed = (dtype, tuple(int(s) for s in shape), bool(fortran), end)
    if len(_HEADERS) >= _MAX_CACHED_HEADERS:
        _HEADERS.clear()
    _HEADERS[key] = parsed
    return parsed


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _content_size(data: bytes | memoryview) -> int:
    """The decompressed size a zstd frame declares (our frames always declare it)."""
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise MemberError("not a zstd frame") from None
    if size < 0:
        return -1
    if size > MAX_MEMBER_BYTES:
        raise MemberError(f"zstd frame declares {size} bytes, more than the {MAX_MEMBER_BYTES} allowed for a member")
    return size


def _decompress(data: bytes | memoryview) -> bytes:
    size = _content_size(data)
    try:
        if size >= 0:
            return _decompressor().decompress(data)
        # A frame without a content size (written by another tool): stream it, bounded.
        out = _decompressor().decompressobj().decompress(bytes(data))
    except zstandard.ZstdError as exc:
        raise MemberError(f"zstd frame does not decompress ({exc})") from None
    if len(out) > MAX_MEMBER_BYTES:
        raise MemberError(f"member decompresses to more than {MAX_MEMBER_BYTES} bytes")
    return out


def _array_from_payload(raw: memoryview, legacy_shuffle: bool) -> np.ndarray:
    """A decompressed payload -> array viewing it (no copy), with every length checked."""
    shuffled = bytes(raw[: len(LEGACY_SHUFFLE_MAGIC)]) == LEGACY_SHUFFLE_MAGIC
    if shuffled:
        if not legacy_shuffle:
            raise MemberError("holds a byte-shuffled (FSHUF1) payload, which only format-1 packs may hold under "
                              f"{ARRAY_SUFFIX}")
        raw = raw[len(LEGACY_SHUFFLE_MAGIC):]
    dtype, shape, fortran, start = _parse_header(raw)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    want = count * dtype.itemsize
    if len(raw) - start != want:
        raise MemberError(f".npy data has {len(raw) - start} bytes, its header ({dtype.str}, {list(shape)}) "
                          f"says {want}")
    order = "F" if fortran else "C"
    if shuffled and dtype.itemsize > 1:
        planes = np.frombuffer(raw, dtype=np.uint8, count=want, offset=start).reshape(dtype.itemsize, count)
        out = np.empty((count, dtype.itemsize), dtype=np.uint8)
        for k in range(dtype.itemsize):  # numpy strided copies, one per byte plane (format 1 only)
            out[:, k] = planes[k]
        return out.reshape(-1).view(dtype).reshape(shape, order=order)
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(shape, order=order)


def array_from_payload(payload: bytes | memoryview) -> np.ndarray:
    """A decompressed `.npy` payload (what `np.save` writes) -> the array viewing it, every length
    checked, never unpickled (MemberError otherwise). Used for payloads kept decompressed."""
    return _array_from_payload(memoryview(payload), legacy_shuffle=False)


def decode_array(data: bytes | memoryview, *, format_version: int = names.FORMAT_VERSION,
                 suffix: str = ARRAY_SUFFIX) -> np.ndarray:
    """An array member (stored as `suffix`) -> its array (over the one decompressed copy); never unpickles.

    `format_version` is the pack's (manifest); format 1 may hold byte-shuffled payloads.
    Raises MemberError when the bytes are not what the suffix promises.
    """
    if suffix == SHUFFLED_ARRAY_SUFFIX:  # decoded into memory of its own (checks the version there)
        return decode_array_into(data, None, format_version=format_version, suffix=suffix)
    _check_version(format_version, suffix)
    raw = _decompress(data)
    return _array_from_payload(memoryview(raw), legacy_shuffle=format_version == 1)


def _blosc_size(data: bytes | memoryview) -> int:
    """The decompressed size a Blosc chunk declares, once its header is checked against `data`."""
    if len(data) < 16 or data[0] not in BLOSC_VERSIONS:
        raise MemberError(f"is not a Blosc chunk (it starts with {bytes(data[:8])!r})")
    # The c-blosc 1 header: version, codec version, flags, typesize, then uint32 LE nbytes,
    # blocksize, cbytes (its README_HEADER; numcodecs keeps its own reader private).
    nbytes, cbytes = int.from_bytes(data[4:8], "little"), int.from_bytes(data[12:16], "little")
    if cbytes != len(data):
        raise MemberError(f"Blosc chunk declares {cbytes} compressed bytes but holds {len(data)}")
    if not 0 < nbytes <= MAX_MEMBER_BYTES:
        raise MemberError(f"Blosc chunk declares {nbytes} bytes (allowed: 1 to {MAX_MEMBER_BYTES})")
    return nbytes


def _blosc_decompress_into(data: bytes | memoryview, dest: memoryview) -> None:
    """Blosc chunk -> `dest` (its exact decompressed size). numcodecs releases the GIL and, off the
    main thread or in a forked worker, uses a private single-threaded context."""
    try:
        _blosc().decompress(data, dest)
    except (RuntimeError, ValueError) as exc:
        raise MemberError(f"Blosc chunk does not decompress ({exc})") from None


class Arena:
    """A reusable block of memory that members are decompressed into (one per decoding thread).

    `reset()` starts over at its beginning: arrays handed out before are then overwritten by the
    next ones, so callers copy what they keep before resetting. Reusing the same pages avoids a
    fresh allocation (and its page faults) per member, which costs about as much as decompressing.
    """

    def __init__(self, nbytes: int = 8 << 20) -> None:
        self._buf = np.empty(nbytes, dtype=np.uint8)
        self._used = 0

    def reset(self) -> None:
        self._used = 0

    def take(self, n: int) -> memoryview:
        start = -(-self._used // _ALIGN) * _ALIGN
        if start + n > len(self._buf):
            # Grow for the rest of this sample; earlier views keep the old block alive.
            self._buf = np.empty(max(2 * len(self._buf), n + _ALIGN), dtype=np.uint8)
            start = 0
        self._used = start + n
        return memoryview(self._buf)[start: start + n]


def decode_array_into(data: bytes | memoryview, arena: Arena | None, *,
                      format_version: int = names.FORMAT_VERSION, suffix: str = ARRAY_SUFFIX) -> np.ndarray:
    """As `decode_array`, but decompressed into `arena` (writable; valid until `arena.reset()`)."""
    _check_version(format_version, suffix)
    if suffix == SHUFFLED_ARRAY_SUFFIX:
        size = _blosc_size(data)
        dest = arena.take(size) if arena is not None else memoryview(np.empty(size, dtype=np.uint8))
        _blosc_decompress_into(data, dest)
        return _array_from_payload(dest, legacy_shuffle=False)
    size = _content_size(data)
    if size < 0 or format_version == 1:
        return np.array(decode_array(data, format_version=format_version))
    dest = arena.take(size)
    try:
        reader = _decompressor().stream_reader(data, read_size=len(data), closefd=False)
        got = 0
        while got < size:
            n = reader.readinto(dest[got:])
            if not n:
                break
            got += n
        extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise MemberError(f"zstd frame does not decompress ({exc})") from None
    if got != size or extra:
        raise MemberError(f"zstd frame declares {size} bytes but holds {'more' if extra else got}")
    return _array_from_payload(dest, legacy_shuffle=False)


def decode_json(data: bytes | memoryview) -> dict[str, Any]:
    """A `<patch_id>.json` member -> its object."""
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MemberError(f"is not UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MemberError(f"holds JSON {type(obj).__name__}, expected an object")
    return obj


def _check_version(format_version: int, suffix: str = ARRAY_SUFFIX) -> None:
    if format_version not in names.READABLE_FORMAT_VERSIONS:
        raise MemberError(f"shard format {format_version} is not one this reader knows "
                          f"({', '.join(map(str, names.READABLE_FORMAT_VERSIONS))}); update flair-stream")
    if suffix not in names.ARRAY_SUFFIXES:
        raise MemberError(f"{suffix!r} is not an array member suffix ({', '.join(names.ARRAY_SUFFIXES)})")
    if suffix == SHUFFLED_ARRAY_SUFFIX and format_version != names.SHUFFLE_FORMAT_VERSION:
        raise MemberError(f"a {SHUFFLED_ARRAY_SUFFIX} member in a format-{format_version} pack "
                          f"(only format {names.SHUFFLE_FORMAT_VERSION} packs hold them)")


def manifest_codec(level: int | Mapping[str, int] | None, modalities: Iterable[str],
                   shuffle: bool = False) -> dict[str, Any]:
    """The manifest's `codec` entry of a pack of `modalities` written with `compression_settings(level, shuffle)`."""
    settings = {m: s for m, s in compression_settings(level, shuffle).items() if m in modalities}
    if not shuffle:
        return {"container": "npy", "compression": "zstd", "member_suffix": ARRAY_SUFFIX,
                "settings": settings, "member_checksum": MEMBER_CHECKSUM}
    return {"container": "npy", "compression": "zstd, blosc (byte-shuffle)",
            "member_suffixes": {m: member_suffix(s) for m, s in settings.items()},
            "settings": settings, "member_checksum": MEMBER_CHECKSUM}


def codec_summary(codec: Mapping[str, Any]) -> str:
    """One line describing a manifest's `codec` entry (formats 2 and 3, or format 1's level + filter)."""
    if "settings" in codec:
        zstd = [s for s in codec["settings"].values() if member_suffix(s) == ARRAY_SUFFIX]
        blosc = sorted(m for m, s in codec["settings"].items() if member_suffix(s) == SHUFFLED_ARRAY_SUFFIX)
        levels = sorted({s["level"] for s in zstd})
        text = f"zstd .npy (levels {', '.join(map(str, levels))} by modality)" if zstd else ""
        if blosc:
            text += (", " if text else "") + f"byte-shuffled Blosc {SHUFFLED_ARRAY_SUFFIX} for {', '.join(blosc)}"
        return f"{text}, checksums {codec.get('member_checksum', 'none')}"
    return f"zstd .npy level {codec.get('level')} filter {codec.get('filter')} (format 1), no member checksums"


def wds_decoder(key: str, data: bytes) -> Any:
    """A webdataset decoder handler for our members: `WebDataset(urls).decode(wds_decoder)`.

    Decodes `*.npy.zst` members (formats 2 and 3, strict), `*.npy.blosc` members (format 3,
    `--shuffle` packs) and `*.json`; returns None for other keys so webdataset's other handlers
    can take them.
    """
    key = key.lower()
    if key.endswith(SHUFFLED_ARRAY_SUFFIX):
        return decode_array(data, format_version=names.SHUFFLE_FORMAT_VERSION, suffix=SHUFFLED_ARRAY_SUFFIX)
    if key.endswith(ARRAY_SUFFIX):
        return decode_array(data)
    if key == "json" or key.endswith(".json"):
        return decode_json(data)
    return None
