"""Zips read in place: the central directory once, then each member with one ranged read.

The central directory is parsed by the standard library's `zipfile` (ZIP64, comments, data
descriptors and all), given a file object whose bytes come from a `RangeReader`: the last 16 kB
are read first (the end record, and the whole directory of a small zip), then the directory in
one more read if it is larger. What the packer keeps of each member is a fixed 36-byte record
(`MEMBER`: where its local header is, its sizes, CRC and method), so 2.5 million members fit in
memory and travel cheaply to worker processes.

A member is then read with one range covering its local header and its data (the local header's
extra field may differ from the directory's, so a little slack is read; a second read fetches what
is missing if it was not enough), inflated, and checked against the directory's size and CRC-32.
Stored and deflated members are supported (the two methods zip tools write by default); deflate
is inflated with ISA-L (`isal`) when it is installed, zlib otherwise.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from packer.errors import PackError
from packer.ranges import RangeReader

try:  # ISA-L inflates raw deflate about 1.5x faster than zlib here (`tools.bench_pack`, zip read paths)
    from isal import isal_zlib as inflater
except ImportError:  # a platform without its wheel: the standard library, same results
    inflater = zlib

TAIL_BYTES = 1 << 14
"""First read of a zip: its end. The end record is the last 22 bytes (98 with ZIP64) unless the zip
has a long comment; `zipfile` then asks for the last 64 kB, which costs one more read."""
LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name/extra len
LOCAL_SIGNATURE = b"PK\x03\x04"
EXTRA_SLACK = 64
"""Bytes read beyond the directory's extra-field length, in case the local one is longer (zip tools
add Unix times and ids to the local header only; ZIP64 sizes may be local only)."""
STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
METHOD_NAMES = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd", 95: "xz"}

MEMBER = struct.Struct("<QQQLHHHH")
"""Packed member record: local header offset, compressed size, size, CRC-32, method, flags, the
directory's extra-field length (the local one is usually about as long), archive number."""
NO_ARCHIVE = 0xFFFF
"""Archive number of a file that is not in a zip (an extracted folder)."""


@dataclass(frozen=True)
class Archive:
    """A zip holding files of the tree: its local path or URL, and the folder its tree paths sit under."""

    location: str
    prefix: str = ""  # "" or "<folder>/" (e.g. "FLAIR-HUB_TOY/")

    def member_name(self, rel: str) -> str:
        return self.prefix + rel

    def where(self, rel: str) -> str:
        """How messages name a file of this zip: `<zip>!/<member>`."""
        return f"{self.location}!/{self.member_name(rel)}"


class MemberError(Exception):
    """A member cannot be read (truncated, corrupt, unsupported): a problem of the patches using it."""


class Member(NamedTuple):
    """One zip member as the packer needs it; `name` is its full name in the zip."""

    name: str
    offset: int
    compressed: int
    size: int
    crc: int
    method: int
    flags: int
    extra: int = 0  # length of the directory's extra field

    def record(self, archive: int) -> bytes:
        return MEMBER.pack(self.offset, self.compressed, self.size, self.crc, self.method, self.flags,
                           min(self.extra, 0xFFFF), archive)

    @classmethod
    def from_record(cls, name: str, record: bytes | memoryview) -> tuple["Member", int]:
        *fields, archive = MEMBER.unpack(record)
        return cls(name, *fields), archive


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over a `RangeReader`, serving zipfile's reads of a zip's end and
    directory: from the bytes already fetched when they cover the read, else with one new read."""

    def __init__(self, reader: RangeReader):
        self.reader = reader
        tail, self.size = reader.tail(TAIL_BYTES)
        if self.size < 0:
            raise PackError(reader.location, "the server did not say how large the file is (no Content-Range total)")
        self.spans = [(self.size - len(tail), tail)]
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        for start, data in self.spans:
            if start <= self.pos and end <= start + len(data):
                out = data[self.pos - start:end - start]
                break
        else:
            out = self.reader.read(self.pos, end - self.pos)
            self.spans.append((self.pos, out))
        self.pos += len(out)
        return out


@dataclass
class Directory:
    """A zip's members (files only) and its size; `cut` describes a zip without its end (see `salvage`)."""

    location: str
    size: int
    members: list[Member]
    cut: str | None = None


def read_directory(reader: RangeReader, salvage: bool = False) -> Directory:
    """Parse the central directory of the zip behind `reader` (one or two reads).

    A local zip whose end is missing (an interrupted download) has no central directory: its
    members are then found by walking their local headers from the start, which also names the
    member the file ends in. Without `salvage` that is an error naming the zip and that member;
    with it, the members are kept (the cut one fails when read, so its patch is left out) and
    `Directory.cut` says what happened. A remote zip is never walked (it would mean downloading it).
    """
    raw = _RangeFile(reader)
    try:
        with zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error) as exc:
        problem = f"not a readable zip ({exc})"
        if "://" in reader.location or not raw.size:
            raise PackError(reader.location, f"{problem}; is the file truncated or corrupt?") from None
        members, cut_in = _walk_local_headers(reader, raw.size)
        where = f"inside member {cut_in}" if cut_in else "after its last complete member"
        cut = (f"no central directory: the file ends at byte {raw.size}, {where}; {len(members)} members "
               "were found from their local headers, any that followed are missing")
        if not salvage:
            raise PackError(reader.location, f"{cut} (--on-error skip packs what precedes the cut)") from None
        return Directory(reader.location, raw.size, [m for m in members if not m.name.endswith("/")], cut)
    members = [Member(i.filename, i.header_offset, i.compress_size, i.file_size, i.CRC, i.compress_type, i.flag_bits,
                      len(i.extra)) for i in infos if not i.is_dir()]
    return Directory(reader.location, raw.size, members)


def _walk_local_headers(reader: RangeReader, size: int) -> tuple[list[Member], str | None]:
    """Members of a zip without its end, from the local headers: (members, name of the cut one or None).

    A member whose data runs past the end of the file is kept with the sizes its header gives, so
    reading it reports the truncation. Members written with a data descriptor (sizes after the
    data) are followed by inflating them; a stored one of that kind ends the walk.
    """
    members: list[Member] = []
    offset = 0
    while offset + LOCAL_HEADER.size <= size:
        head = reader.read(offset, LOCAL_HEADER.size)
        if head[:4] != LOCAL_SIGNATURE:
            return members, None  # the central directory's start, or garbage: no member is cut
        _, _, flags, method, _, _, crc, compressed, usize, name_len, extra_len = LOCAL_HEADER.unpack(head)
        raw_name = reader.read(offset + LOCAL_HEADER.size, name_len)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        start = offset + LOCAL_HEADER.size + name_len + extra_len
        if flags & 0x8:  # sizes come after the data
            found = _inflate_to_end(reader, start, size) if method == DEFLATED else None
            if found is None:
                members.append(Member(name, offset, size - start + 1, 0, 0, method, flags))
                return members, name
            compressed, usize, crc, after = found
            members.append(Member(name, offset, compressed, usize, crc, method, flags))
            offset = after
            continue
        members.append(Member(name, offset, compressed, usize, crc, method, flags))
        if start + compressed > size:
            return members, name
        offset = start + compressed
    return members, None


def _inflate_to_end(reader: RangeReader, start: int, size: int) -> tuple[int, int, int, int] | None:
    """(compressed, size, crc, offset after the data descriptor) of a deflate stream, or None if cut."""
    d = zlib.decompressobj(-15)
    pos, out_size, crc = start, 0, 0
    while not d.eof:
        if pos >= size:
            return None
        chunk = reader.read(pos, min(1 << 20, size - pos))
        data = d.decompress(chunk)
        out_size += len(data)
        crc = zlib.crc32(data, crc)
        pos += len(chunk) - len(d.unused_data)
    descriptor = reader.read(pos, 16)
    after = pos + (16 if descriptor[:4] == b"PK\x07\x08" else 12)
    return pos - start, out_size, crc, after


def read_member(reader: RangeReader, member: Member) -> bytes:
    """The uncompressed bytes of `member`, checked against its size and CRC-32 (MemberError if not)."""
    if member.flags & 0x1:
        raise MemberError("encrypted member (not supported)")
    if member.method not in (STORED, DEFLATED):
        raise MemberError(f"compression method {METHOD_NAMES.get(member.method, member.method)} is not supported "
                          "(stored or deflate are)")
    name = member.name.encode("utf-8") if member.flags & 0x800 else _legacy_name(member.name)
    want = LOCAL_HEADER.size + len(name) + member.extra + EXTRA_SLACK + member.compressed
    buf = reader.read(member.offset, want)
    if len(buf) < LOCAL_HEADER.size or buf[:4] != LOCAL_SIGNATURE:
        raise MemberError(f"no local header at byte {member.offset} (the zip is truncated or corrupt)")
    fields = LOCAL_HEADER.unpack_from(buf)
    name_len, extra_len = fields[-2], fields[-1]
    start = LOCAL_HEADER.size + name_len + extra_len
    end = start + member.compressed
    if len(buf) < end:
        buf += reader.read(member.offset + len(buf), end - len(buf))
    if len(buf) < end:
        raise MemberError(f"truncated: its data ends at byte {member.offset + end} but the zip ends at byte "
                          f"{member.offset + len(buf)}")
    if buf[LOCAL_HEADER.size:LOCAL_HEADER.size + name_len] != name:
        raise MemberError(f"the local header names {bytes(buf[LOCAL_HEADER.size:LOCAL_HEADER.size + name_len])!r} "
                          "(corrupt zip)")
    view = memoryview(buf)[start:end]
    if member.method == STORED:
        data = bytes(view)
    else:
        try:
            data = inflater.decompress(view, -15, max(member.size, 1))
        except (inflater.error, zlib.error) as exc:
            raise MemberError(f"corrupt deflate data ({exc})") from None
    if len(data) != member.size:
        raise MemberError(f"inflated to {len(data)} bytes, the directory says {member.size} (corrupt zip)")
    if zlib.crc32(data) != member.crc:
        raise MemberError("CRC-32 mismatch (corrupt zip)")
    return data


def _legacy_name(name: str) -> bytes:
    """Names without the UTF-8 flag are cp437 in the zip (zipfile decoded them so)."""
    try:
        return name.encode("cp437")
    except UnicodeEncodeError:
        return name.encode("utf-8")
