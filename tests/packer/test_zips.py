"""`packer.zips`: central directories and members read with as few ranged reads as the format allows."""

import io
import os
import zipfile

import pytest

from packer.errors import PackError
from packer.ranges import LocalFile, fetch_stats
from packer.zips import MemberError, read_directory, read_member

PAYLOADS = {f"dir/file{i}.tif": os.urandom(3000 + 1000 * i) + b"\0" * 20000 for i in range(5)}


def _write(path, *, compression=zipfile.ZIP_DEFLATED, force_zip64=False, extra=b"", comment=b""):
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.comment = comment
        for name, data in PAYLOADS.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            info.extra = extra
            with zf.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return path


def _read_all(path) -> tuple[dict[str, bytes], int, int]:
    """{name: bytes}, reads for the directory, reads for the members."""
    reader = LocalFile(str(path))
    before = fetch_stats()
    directory = read_directory(reader)
    mid = fetch_stats()
    data = {m.name: read_member(reader, m) for m in directory.members}
    return data, (mid - before).requests, (fetch_stats() - mid).requests


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_one_read_per_member_and_one_for_a_small_directory(tmp_path, compression):
    data, dir_reads, member_reads = _read_all(_write(tmp_path / "a.zip", compression=compression))
    assert data == PAYLOADS and dir_reads == 1 and member_reads == len(PAYLOADS)


def test_zip64_records_and_local_extra_fields(tmp_path):
    """ZIP64 sizes are in the local header only here: the slack covers them without a second read."""
    data, _, member_reads = _read_all(_write(tmp_path / "z64.zip", force_zip64=True))
    assert data == PAYLOADS and member_reads == len(PAYLOADS)
    long_extra = b"\xfe\xca" + (196).to_bytes(2, "little") + b"x" * 196  # 200 bytes, local and central
    data, _, member_reads = _read_all(_write(tmp_path / "extra.zip", extra=long_extra))
    assert data == PAYLOADS and member_reads == len(PAYLOADS)


def test_a_long_comment_costs_one_more_read(tmp_path):
    """The end record is then up to 64 kB from the end: one more read, which here also holds the
    (small) directory, so zipfile's later reads of the directory are served from it."""
    data, dir_reads, _ = _read_all(_write(tmp_path / "c.zip", comment=b"c" * 60000))
    assert data == PAYLOADS and dir_reads == 2


class _Unseekable(io.RawIOBase):
    """Makes zipfile write data descriptors (sizes after the data), as streaming zip tools do."""

    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


def test_truncated_zip_with_data_descriptors_names_the_cut_member(tmp_path):
    path = tmp_path / "streamed.zip"
    with open(path, "wb") as raw, zipfile.ZipFile(_Unseekable(raw), "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in PAYLOADS.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert all(i.flag_bits & 0x08 for i in infos)
    victim = infos[3]
    os.truncate(path, victim.header_offset + 30 + len(victim.filename) + victim.compress_size // 2)
    reader = LocalFile(str(path))
    with pytest.raises(PackError, match=f"inside member {victim.filename}"):
        read_directory(reader)
    salvaged = read_directory(reader, salvage=True)
    assert [m.name for m in salvaged.members] == [i.filename for i in infos[:4]]
    assert "no central directory" in salvaged.cut
    for m in salvaged.members[:3]:
        assert read_member(reader, m) == PAYLOADS[m.name]
    with pytest.raises(MemberError, match="truncated"):
        read_member(reader, salvaged.members[3])


def test_unsupported_methods_and_corruption_are_member_errors(tmp_path):
    path = tmp_path / "bz.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.tif", b"x" * 1000)
    reader = LocalFile(str(path))
    (member,) = read_directory(reader).members
    with pytest.raises(MemberError, match="bzip2 is not supported"):
        read_member(reader, member)
    stored = _write(tmp_path / "s.zip", compression=zipfile.ZIP_STORED)
    first = read_directory(LocalFile(str(stored))).members[0]
    with pytest.raises(MemberError, match="no local header"):
        read_member(LocalFile(str(stored)), first._replace(offset=first.offset + 1))
    not_a_zip = tmp_path / "x.zip"
    not_a_zip.write_bytes(b"")
    with pytest.raises(PackError, match="not a readable zip"):
        read_directory(LocalFile(str(not_a_zip)))
